"""What a caller sends, judged without I/O: the rate of its digits and the format of its audio.

Both are pure state machines that take `now` (seconds) as an argument, so they are tested with a fake
clock; `bridge.call.Call` feeds them and acts on their verdicts (drops a digit, hangs up, logs a warning,
decodes the audio).
"""

from __future__ import annotations

from bridge.protocol import Kind

__all__ = ["DTMF_BURST", "DTMF_FLOOD_EXCESS", "DTMF_RATE_PER_S", "FORMAT_ATTEMPTS", "FORMAT_FRAMES",
           "FORMAT_MAX_BYTES_PER_S", "InboundFormat", "KeyRateLimit"]

DTMF_RATE_PER_S = 10.0
"""Digits a second a call may send: a human presses at most about ten keys a second."""
DTMF_BURST = 20
"""Digits accepted at once above the rate (a fast typist's burst, a dialplan sending a short code)."""
DTMF_FLOOD_EXCESS = 100
"""Dropped digits (decaying at `DTMF_RATE_PER_S`) at which a call counts as flooding and is hung up."""

FORMAT_FRAMES = 10
"""Inbound 0x10 messages whose byte rate judges the format (slin8 = 16000 B/s; μ-law mislabelled = 8000)."""
FORMAT_MAX_BYTES_PER_S = 48000
"""Above this no format arrives at the real rate (slin16 is 32000 B/s): the messages came bunched (a
network hiccup, a peer that buffered them), and their rate says nothing; the judgement starts again."""
FORMAT_ATTEMPTS = 5
"""Windows of `FORMAT_FRAMES` judged at most; if all came bunched, the audio is taken as labelled."""


class KeyRateLimit:
    """A token bucket on one call's inbound control messages (DTMF).

    Why: every digit costs a log line, an event and the dialogue's work, all on the loop that paces every
    call's audio. A peer sending digits as fast as TCP carries them (tens of thousands a second) must not
    be able to starve the media clock, while a human (about ten keys a second, bursts of a few more) is
    never limited. `offer(now)` answers ACCEPT, DROP (over the rate: the digit is discarded) or FLOOD
    (drops keep outpacing the rate: the call should be hung up).
    """

    ACCEPT = "accept"
    DROP = "drop"
    FLOOD = "flood"

    __slots__ = ("_at", "_excess", "_tokens", "burst", "flood_excess", "rate_per_s")

    def __init__(self, rate_per_s: float = DTMF_RATE_PER_S, burst: int = DTMF_BURST,
                 flood_excess: int = DTMF_FLOOD_EXCESS) -> None:
        if rate_per_s <= 0 or burst < 1 or flood_excess < 1:
            raise ValueError(f"KeyRateLimit needs rate_per_s > 0, burst >= 1, flood_excess >= 1; got "
                             f"{rate_per_s}, {burst}, {flood_excess}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.flood_excess = flood_excess
        self._tokens = float(burst)
        self._excess = 0.0
        self._at: float | None = None

    def offer(self, now: float) -> str:
        """One digit arrived at `now`: ACCEPT, DROP or FLOOD."""
        if self._at is not None:
            elapsed = max(0.0, now - self._at)
            refill = elapsed * self.rate_per_s
            self._tokens = min(float(self.burst), self._tokens + refill)
            self._excess = max(0.0, self._excess - refill)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return self.ACCEPT
        self._excess += 1.0
        return self.FLOOD if self._excess >= self.flood_excess else self.DROP


class InboundFormat:
    """Judges what 0x10 audio really is from its byte rate over the first `FORMAT_FRAMES` messages.

    Slin 8 kHz, as labelled, is 16000 B/s. Half of that is μ-law still labelled 0x10 (Dial(AudioSocket/...)
    without c(slin)); double is slin16 labelled 0x10 (ARI externalMedia format=slin16 before Asterisk
    20.17). Size alone cannot tell 160-byte μ-law from 10 ms slin8 packets, hence the rate; a window that
    arrived bunched (faster than any format) is judged again, up to `FORMAT_ATTEMPTS` windows. While `judging`,
    the call holds ambiguous payloads back from its listeners; then `verdict` says how to read them: None
    (slin 8 kHz as labelled), "ulaw" or "slin16", and `bytes_per_s` what the rate was.
    """

    __slots__ = ("_bytes", "_frames", "_t0", "attempts", "bytes_per_s", "judging", "verdict")

    def __init__(self) -> None:
        self.judging = True
        self.verdict: str | None = None
        self.bytes_per_s: float | None = None
        self.attempts = 0
        self._frames = 0
        self._bytes = 0
        self._t0 = 0.0

    def offer(self, kind: int, n: int, now: float) -> bool:
        """A message of `kind` with an `n`-byte payload arrived at `now`; True when this one ended the
        judgement (a first message of another kind ends it at once, with no verdict)."""
        if not self.judging:
            return False
        if kind != Kind.AUDIO:
            self.judging = False
            return True
        if self._frames == 0:
            self._t0 = now
        else:
            self._bytes += n
        self._frames += 1
        if self._frames < FORMAT_FRAMES:
            return False
        self.attempts += 1
        elapsed = now - self._t0
        rate = self._bytes / elapsed if elapsed > 0 else None
        if (rate is None or rate > FORMAT_MAX_BYTES_PER_S) and self.attempts < FORMAT_ATTEMPTS:
            self._frames = self._bytes = 0  # bunched: this window's rate is the peer's, not the audio's
            return False
        self.judging = False
        self.bytes_per_s = rate
        if rate is not None and 5000 <= rate <= 11000:
            self.verdict = "ulaw"
        elif rate is not None and 24000 <= rate <= 40000:
            self.verdict = "slin16"
        return True
