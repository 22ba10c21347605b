"""A simulated Asterisk AudioSocket caller with a timing report, and `voice-bridge call`.

It behaves as `AudioSocket()` in Asterisk's dialplan does (app_audiosocket.c, res_audiosocket.c): it
sends the UUID, then a 320-byte slin frame every 20 ms on an absolute clock (silence, a WAV file, or
speech-like noise), DTMF digits with the audio gap Asterisk makes around them (no voice frames while the
key is down, then 0x03 when it is released), caller speech from a given time (for barge-in), and it simply
closes the socket to hang up. It parses what the server sends as strictly as Asterisk 20.15+ does, and
closes on what Asterisk would refuse: kinds other than 0x10 / 0x00, zero- or odd-length audio, a payload
arriving more than 5 ms after its header.

The report measures what a phone would hear:
- `first_frame_ms`: UUID sent -> first audio message of any content (silence must start within a tick);
- `first_audio_ms`: UUID sent -> first non-silent frame;
- `realtime_ratio`: audio received / wall time between the first and last frame (1.00 is exact pacing);
- `worst_burst_frames`: most frames that arrived within any 20 ms window (1 is perfect, 2 is jitter);
- `worst_gap_ms`: the longest time between two consecutive frames (20 is perfect);
- `frames`, `bytes`: audio received; `hangup`: who ended the call (caller, server = 0x00 received,
  server-eof = closed without 0x00, server-reset, protocol-error).

Many callers in one process (the benchmark runs a thousand) share one sending ticker per event loop with
ten 2 ms slots, so each caller keeps its own phase, as independent phones do, at the cost of one timer.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import dataclasses
import json
import math
import os
import random
import sys
import time
import uuid as uuid_module
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

from bridge.protocol import (
    AUDIO_HEADER_320,
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATES,
    SILENCE_FRAME,
    SILENCE_PAYLOAD,
    Decoder,
    IncompleteMessage,
    Kind,
    Message,
    ProtocolError,
    encode_dtmf,
    encode_uuid,
)
from voice.audio import SAMPLE_RATE, read_wav, to_frames, write_wav
from voice.config import ConfigError, EnvSettings, NonEmpty, between, setting
from voice.emulators.tone_code import synthesize_pcm

__all__ = ["CallReport", "place_call", "speech_noise_frames", "configure_parser", "run", "parse_dtmf", "parse_say",
           "pacing_figures", "sender_stats"]

FRAME_S = FRAME_MS / 1000
LATE_PAYLOAD_S = 0.005
"""Asterisk 20.15+ tears the call down when a payload arrives more than 5 ms after its header."""
SLOTS = 10
"""Sending phases per 20 ms: the shared ticker wakes every 2 ms and serves the callers of that phase."""
_FULL_READ = 65536
"""A read this big may have been cut by the reader's buffer, not by the sender: not a late payload."""


# --- the report -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class CallReport:
    uuid: str
    hangup: str
    """caller | server (0x00 received) | server-eof | server-reset | protocol-error | timeout | cancelled;
    `voice-bridge call --json` also reports not-placed (no connection, or a bad option found before it)"""
    error: str | None
    duration_s: float
    first_frame_ms: float | None
    first_audio_ms: float | None
    realtime_ratio: float | None
    worst_burst_frames: int
    worst_gap_ms: float | None
    frames: int
    bytes: int
    frames_sent: int
    dtmf_sent: list[tuple[float, str]]
    """(ms after the UUID, digit) for each 0x03 sent."""
    received_hangup: bool
    audio: builtins.bytes = dataclasses.field(default=b"", repr=False)  # `bytes` here is the field above
    """Every received audio payload, concatenated (kept when `keep_audio` or `record`)."""
    arrivals_ms: list[float] = dataclasses.field(default_factory=list, repr=False)
    """Arrival time of each received audio message, ms after the UUID was sent."""
    silent_frames: int = 0
    uuid_at: float = 0.0
    """time.monotonic() as the UUID went out (CLOCK_MONOTONIC: benchmarks compare it with other processes')."""
    said_ms: list[float] = dataclasses.field(default_factory=list, repr=False)
    """For each `say` text, when its last frame was written, ms after the UUID (the end of the caller's speech
    as sent, not as scheduled: the shared ticker's phase and lateness included)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("audio")
        data.pop("arrivals_ms")
        data.pop("said_ms")
        data.pop("uuid_at")
        data["dtmf_sent"] = [[t, d] for t, d in self.dtmf_sent]
        return data


def pacing_figures(arrivals: Sequence[float], payload_bytes: Sequence[int] | None = None,
                   frame_s: float = FRAME_S) -> tuple[float | None, int, float | None]:
    """(realtime_ratio, worst_burst_frames, worst_gap_s) from arrival times in seconds.

    The ratio is the audio duration between the first and the last frame over the wall time between them.
    A burst is the most frames whose arrivals fit inside any half-open 20 ms window.
    """
    n = len(arrivals)
    if n == 0:
        return None, 0, None
    burst = 1
    start = 0
    worst_gap = 0.0
    for i in range(1, n):
        t = arrivals[i]
        gap = t - arrivals[i - 1]
        if gap > worst_gap:
            worst_gap = gap
        while t - arrivals[start] >= frame_s - 1e-6:  # (float rounding of exact 20 ms spacing)
            start += 1
        if i - start + 1 > burst:
            burst = i - start + 1
    if n < 2:
        return None, burst, None
    wall = arrivals[-1] - arrivals[0]
    if payload_bytes is None:
        audio_s = (n - 1) * frame_s
    else:
        audio_s = (sum(payload_bytes) - payload_bytes[-1]) / (2 * SAMPLE_RATE)
    ratio = audio_s / wall if wall > 0 else float("inf")
    return ratio, burst, worst_gap


# --- outbound audio -------------------------------------------------------------------------------------

_noise_cache: dict[tuple[int, int, int], list[bytes]] = {}


def speech_noise_frames(seconds: float = 2.0, seed: int = 7, level: int = 6000) -> list[bytes]:
    """Speech-like noise: random samples under a syllable-rate (about 4 Hz) envelope, computed once."""
    count = max(1, round(seconds / FRAME_S))
    key = (count, seed, level)
    cached = _noise_cache.get(key)
    if cached is not None:
        return cached
    rng = random.Random(seed)
    samples = array("h")
    per_frame = FRAME_BYTES // 2
    for f in range(count):
        # syllables of ~250 ms: loud in the middle, quieter at the edges, never silent
        phase = (f % 12) / 12
        envelope = 0.35 + 0.65 * (1 - abs(2 * phase - 1))
        amp = int(level * envelope)
        samples.extend(rng.randint(-amp, amp) for _ in range(per_frame))
    if sys.byteorder != "little":  # pragma: no cover
        samples.byteswap()
    raw = samples.tobytes()
    frames = [raw[i:i + FRAME_BYTES] for i in range(0, len(raw), FRAME_BYTES)]
    _noise_cache[key] = frames
    return frames


@dataclasses.dataclass(frozen=True)
class _Script:
    """What the caller sends at each frame index: precomputed so the per-tick work is a lookup."""

    background: list[bytes] | None
    """Frames sent from the start (a WAV file), then silence; None = silence (noise: cycled)."""
    cycle_background: bool
    speech: list[bytes]
    speech_from: int
    speech_to: int
    gaps: list[tuple[int, int, bytes]]
    """(first silent index, release index, DTMF message) sorted by time."""
    said: tuple[tuple[int, list[bytes]], ...] = ()
    """(first index, frames) of each `--say` text: tone-coded speech the STT emulator hears as that text."""

    def message(self, k: int) -> tuple[bytes | None, bytes | None]:
        """(DTMF message to send before the frame or None, the audio message or None for a gap)."""
        dtmf = None
        for first, release, msg in self.gaps:
            if first <= k < release:
                return None, None
            if k == release:
                dtmf = msg
        for first, frames in self.said:
            if first <= k < first + len(frames):
                return dtmf, AUDIO_HEADER_320 + frames[k - first]
        if self.speech_from <= k < self.speech_to:
            return dtmf, AUDIO_HEADER_320 + self.speech[(k - self.speech_from) % len(self.speech)]
        bg = self.background
        if bg is not None:
            if self.cycle_background:
                return dtmf, AUDIO_HEADER_320 + bg[k % len(bg)]
            if k < len(bg):
                return dtmf, AUDIO_HEADER_320 + bg[k]
        return dtmf, SILENCE_FRAME

    @property
    def plain_before(self) -> int:
        """Frames before this index are plain silence (the fast path), when there is no background."""
        if self.background is not None:
            return 0
        firsts = [first for first, _, _ in self.gaps] + [self.speech_from] + [first for first, _ in self.said]
        return min(firsts)


# --- the shared sending ticker --------------------------------------------------------------------------


class _SendTicker:
    """One timer per event loop for every simulated caller: absolute schedule, SLOTS phases per frame."""

    def __init__(self) -> None:
        self.slots: list[dict[_CallerProtocol, None]] = [{} for _ in range(SLOTS)]
        self.count = 0
        self.lateness_max = 0.0
        self.resyncs = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._t0 = 0.0
        self._k = 0

    def add(self, caller: _CallerProtocol) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="caller-ticker")
        if self.count == 0:
            self._t0 = time.monotonic()
            self._k = 0
        # the next sub-tick serves this caller first, then every SLOTS sub-ticks after
        slot = self._k % SLOTS
        self.slots[slot][caller] = None
        caller.slot = slot
        self.count += 1
        self._wake.set()

    def remove(self, caller: _CallerProtocol) -> None:
        if caller.slot >= 0 and self.slots[caller.slot].pop(caller, 0) is None:
            self.count -= 1
        caller.slot = -1

    async def _run(self) -> None:
        step = FRAME_S / SLOTS
        mono = time.monotonic
        while True:
            if self.count == 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.slots[self._k % SLOTS]:  # nobody in this phase: no need to wake up for it
                self._k += 1
                continue
            target = self._t0 + self._k * step
            now = mono()
            while target - now > 0.0002:
                await asyncio.sleep(target - now)
                now = mono()
            late = now - target
            if late > 0.1:
                self.resyncs += 1
                skip = int(late / step)
                self._k += skip - skip % SLOTS  # keep every caller's phase
            elif late > self.lateness_max:
                self.lateness_max = late
            slot = self.slots[self._k % SLOTS]
            self._k += 1
            if slot:
                for caller in tuple(slot):
                    caller.send_tick()


_tickers: dict[asyncio.AbstractEventLoop, _SendTicker] = {}


def _ticker() -> _SendTicker:
    loop = asyncio.get_running_loop()
    ticker = _tickers.get(loop)
    if ticker is None:
        for old in [lp for lp in _tickers if lp.is_closed()]:
            del _tickers[old]
        ticker = _tickers[loop] = _SendTicker()
    return ticker


def sender_stats() -> dict[str, float]:
    """The shared sending ticker of this event loop: its worst lateness and resynchronisations so far."""
    ticker = _ticker()
    return {"lateness_max_ms": round(ticker.lateness_max * 1000, 2), "resyncs": ticker.resyncs}


# --- one simulated call ---------------------------------------------------------------------------------


class _CallerProtocol(asyncio.Protocol):
    def __init__(self, script: _Script, total_frames: int | None, *, strict: bool, keep_audio: bool) -> None:
        self.script = script
        self.total_frames = total_frames
        self.strict = strict
        self.keep_audio = keep_audio
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(strict_audio=strict,
                               allowed_kinds=frozenset({Kind.HANGUP, Kind.AUDIO}) if strict else None)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.slot = -1
        self.k = 0
        self.plain_before = script.plain_before
        self.t_uuid = 0.0
        self.t_end = 0.0
        self.arrivals = array("d")
        self.sizes = array("l")
        self.audio: list[bytes] = []
        self.first_audio: float | None = None
        self.silent_frames = 0
        self.bytes = 0
        self.frames_sent = 0
        self.dtmf_sent: list[tuple[float, str]] = []
        self.said_last = frozenset(first + len(frames) - 1 for first, frames in script.said)
        self.said_at: list[float] = []
        self.hangup: str | None = None
        self.error: str | None = None
        self.received_hangup = False
        self._header_since: float | None = None
        self._header_read_len = 0

    # sending --------------------------------------------------------------------------------------------

    def start(self, call_uuid: uuid_module.UUID) -> None:
        self.t_uuid = time.monotonic()
        if self.hangup is not None or self.transport is None or self.transport.is_closing():
            self.finish(self.hangup or "server-eof", self.error)
            return
        self.transport.write(encode_uuid(call_uuid))
        _ticker().add(self)

    def send_tick(self) -> None:
        k = self.k
        if self.total_frames is not None and k >= self.total_frames:
            self.finish("caller")
            return
        self.k = k + 1
        write = self.transport.write  # type: ignore[union-attr]
        if k < self.plain_before:
            write(SILENCE_FRAME)
            self.frames_sent += 1
            return
        dtmf, msg = self.script.message(k)
        if dtmf is not None:
            write(dtmf)
            self.dtmf_sent.append((round((time.monotonic() - self.t_uuid) * 1000, 1), chr(dtmf[3])))
        if msg is not None:
            write(msg)
            self.frames_sent += 1
            if k in self.said_last:
                self.said_at.append(time.monotonic())

    def finish(self, hangup: str, error: str | None = None) -> None:
        """End the call (idempotent): like Asterisk, just close the socket."""
        if self.hangup is None:
            self.hangup = hangup
            self.error = error
            self.t_end = time.monotonic()
        _ticker().remove(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    # receiving ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.hangup is not None:
            return
        now = time.monotonic()
        since = self._header_since
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as exc:
            self._handle(exc.messages, now)
            self.finish("protocol-error", f"the server sent what Asterisk refuses: {exc}")
            return
        if since is not None and messages:
            self._header_since = None
            late = now - since
            if self.strict and late > LATE_PAYLOAD_S and self._header_read_len < _FULL_READ:
                self.finish("protocol-error", f"a payload arrived {late * 1000:.1f} ms after its header "
                                              f"(Asterisk 20.15+ tears the call down past 5 ms)")
                return
        if self.decoder.header_pending and self._header_since is None:
            self._header_since = now
            self._header_read_len = len(data)
        self._handle(messages, now)

    def _handle(self, messages: list[Message], now: float) -> None:
        for kind, payload in messages:
            if kind in SAMPLE_RATES:
                self.arrivals.append(now)
                size = len(payload)
                self.sizes.append(size)
                self.bytes += size
                if self.first_audio is None:
                    if payload == SILENCE_PAYLOAD or not payload.strip(b"\x00"):
                        self.silent_frames += 1
                    else:
                        self.first_audio = now
                if self.keep_audio:
                    self.audio.append(payload)
            elif kind == Kind.HANGUP:
                self.received_hangup = True
                self.finish("server")
                return
            # non-strict mode: other kinds are ignored, as old Asterisk versions do

    def connection_lost(self, exc: Exception | None) -> None:
        if self.hangup is None:
            try:
                self.decoder.eof()
            except IncompleteMessage as err:
                self.finish("server-eof", f"the server closed mid-message: {err}")
                return
            except ProtocolError:
                pass
            self.finish("server-reset" if isinstance(exc, ConnectionResetError) else "server-eof")
        elif not self.done.done():
            self.done.set_result(None)

    # report ---------------------------------------------------------------------------------------------

    def report(self, call_uuid: uuid_module.UUID) -> CallReport:
        t0 = self.t_uuid
        arrivals = self.arrivals
        ratio, burst, gap = pacing_figures(arrivals, self.sizes)
        return CallReport(
            uuid=str(call_uuid),
            hangup=self.hangup or "unknown",
            error=self.error,
            duration_s=round((self.t_end or time.monotonic()) - t0, 3),
            first_frame_ms=round((arrivals[0] - t0) * 1000, 2) if arrivals else None,
            first_audio_ms=round((self.first_audio - t0) * 1000, 2) if self.first_audio is not None else None,
            realtime_ratio=round(ratio, 4) if ratio is not None else None,
            worst_burst_frames=burst,
            worst_gap_ms=round(gap * 1000, 2) if gap is not None else None,
            frames=len(arrivals),
            bytes=self.bytes,
            frames_sent=self.frames_sent,
            dtmf_sent=self.dtmf_sent,
            received_hangup=self.received_hangup,
            audio=b"".join(self.audio),
            arrivals_ms=[round((t - t0) * 1000, 3) for t in arrivals] if self.keep_audio else [],
            silent_frames=self.silent_frames,
            uuid_at=t0,
            said_ms=[round((t - t0) * 1000, 3) for t in self.said_at],
        )


def _build_script(audio: str | Sequence[bytes], dtmf: Iterable[tuple[float, str]], dtmf_ms: float,
                  speech_at: float | None, speech_s: float, speech: Sequence[bytes] | None,
                  say: Iterable[tuple[float, str]] = ()) -> _Script:
    if isinstance(audio, str):
        if audio == "silence":
            background, cycle = None, False
        elif audio == "noise":
            background, cycle = speech_noise_frames(), True
        else:
            background, cycle = to_frames(read_wav(audio).pcm), False
    else:
        background, cycle = [bytes(f) for f in audio], False
        if any(len(f) != FRAME_BYTES for f in background):
            raise ValueError(f"audio frames must be {FRAME_BYTES} bytes each")
    gaps = []
    for at, digit in sorted(dtmf):
        first = max(0, round(at / FRAME_S))
        release = first + max(1, round(dtmf_ms / 1000 / FRAME_S))
        gaps.append((first, release, encode_dtmf(digit)))
    speech_frames = list(speech) if speech else speech_noise_frames()
    if speech_at is None:
        s_from = s_to = 1 << 62
    else:
        s_from = max(0, round(speech_at / FRAME_S))
        s_to = s_from + max(1, round(speech_s / FRAME_S))
    said = tuple((max(0, round(at / FRAME_S)), to_frames(synthesize_pcm(text, SAMPLE_RATE)))
                 for at, text in sorted(say))
    return _Script(background, cycle, speech_frames, s_from, s_to, gaps, said)


async def place_call(
    host: str,
    port: int,
    *,
    duration_s: float | None = 5.0,
    uuid: uuid_module.UUID | str | None = None,
    dtmf: Iterable[tuple[float, str]] = (),
    dtmf_ms: float = 100.0,
    speech_at: float | None = None,
    speech_s: float = 1.0,
    speech: Sequence[bytes] | None = None,
    say: Iterable[tuple[float, str]] = (),
    audio: str | Sequence[bytes] = "silence",
    record: str | os.PathLike[str] | None = None,
    keep_audio: bool = False,
    strict: bool = True,
    connect_timeout_s: float = 5.0,
    max_wait_s: float | None = None,
) -> CallReport:
    """Place one simulated call and return its report.

    `duration_s`: the caller hangs up (closes) after this many seconds of sending; None = until the server
    hangs up. `dtmf`: (seconds after the UUID the key goes down, digit); the key is held `dtmf_ms`, during
    which no audio is sent, and 0x03 goes out when it is released. `speech_at`/`speech_s`: the caller
    speaks (speech-like noise, or `speech` frames) from then for that long. `say`: (seconds, text): the caller
    says `text` from then, tone-coded (voice.emulators.tone_code) so the STT emulator hears exactly that
    text. `audio`: what the caller sends
    otherwise: "silence", "noise", a WAV path, or a list of 320-byte frames (then silence).
    `record`: write what was heard to this WAV file. `keep_audio`: keep the received audio and arrival
    times in the report. `max_wait_s`: give up (close) after this long whatever happens.
    Raises OSError when the connection cannot be made.
    """
    call_uuid = uuid if isinstance(uuid, uuid_module.UUID) else uuid_module.UUID(uuid) if uuid else uuid_module.uuid4()
    script = _build_script(audio, dtmf, dtmf_ms, speech_at, speech_s, speech, say)
    total = None if duration_s is None else max(0, round(duration_s / FRAME_S))
    loop = asyncio.get_running_loop()
    keep = keep_audio or record is not None
    _, caller = await asyncio.wait_for(
        loop.create_connection(lambda: _CallerProtocol(script, total, strict=strict, keep_audio=keep), host, port),
        connect_timeout_s,
    )
    caller.start(call_uuid)
    try:
        if max_wait_s is None:
            await asyncio.shield(caller.done)
        else:
            try:
                await asyncio.wait_for(asyncio.shield(caller.done), max_wait_s)
            except TimeoutError:
                caller.finish("timeout", f"no end after {max_wait_s} s")
    finally:
        if not caller.done.done():  # cancelled: hang up cleanly
            caller.finish("cancelled")
    report = caller.report(call_uuid)
    if record is not None:
        write_wav(Path(record), report.audio)
    return report


# --- `voice-bridge call` --------------------------------------------------------------------------------


def parse_dtmf(text: str) -> list[tuple[float, str]]:
    """"1.5:5,3:#" -> [(1.5, "5"), (3.0, "#")]; errors name the bad item."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        at, sep, digit = item.rpartition(":")
        try:
            seconds = float(at)
            encode_dtmf(digit)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad DTMF item {item!r}: expected SECONDS:DIGIT with a digit of 0-9 * # A-D, e.g. 1.5:5") from None
        if not sep or seconds < 0:
            raise argparse.ArgumentTypeError(f"bad DTMF item {item!r}: expected SECONDS:DIGIT, e.g. 1.5:5")
        out.append((seconds, digit))
    return out


def parse_say(text: str) -> tuple[float, str]:
    """"да@2.0" -> (2.0, "да"): the caller says TEXT at SECONDS; errors name the bad item."""
    said, sep, at = text.rpartition("@")
    try:
        seconds = float(at)
    except ValueError:
        seconds = -1.0
    if not sep or not said.strip() or seconds < 0:
        raise argparse.ArgumentTypeError(f"bad --say {text!r}: expected TEXT@SECONDS, e.g. да@2.0")
    return seconds, said


class CallerSettings(EnvSettings):
    """Where `voice-bridge call` rings by default: the bridge's own variables (a flag wins over them)."""

    host: NonEmpty = setting("BRIDGE_HOST", "127.0.0.1", "bridge address")
    port: Annotated[int, between(1, 65535)] = setting("BRIDGE_PORT", 9092, "bridge port")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bridge address [env BRIDGE_HOST; default 127.0.0.1]")
    parser.add_argument("--port", type=_port, default=None, help="bridge port [env BRIDGE_PORT; default 9092]")
    parser.add_argument("--duration", type=_seconds, default=5.0, metavar="S",
                        help="seconds before the caller hangs up; 0 = wait for the server to hang up [default 5]")
    parser.add_argument("--uuid", type=_uuid, default=None,
                        help="call UUID, e.g. 0b4e8a5c-1f0e-4c1e-9a6d-3c2b1a0f9e8d [default a random one]")
    parser.add_argument("--dtmf", type=parse_dtmf, default=[], metavar="S:D,...",
                        help="digits pressed at given seconds after the UUID, e.g. 1.5:5,3:#")
    parser.add_argument("--speech-at", type=_seconds, default=None, metavar="S",
                        help="the caller starts speaking (speech-like noise) at S seconds, e.g. for barge-in; "
                             "unset: it does not speak")
    parser.add_argument("--speech-for", type=_seconds, default=1.0, metavar="S",
                        help="how long the caller speaks [default 1]")
    parser.add_argument("--say", type=parse_say, action="append", default=[], metavar="TEXT@S",
                        help="the caller says TEXT at S seconds (tone-coded: the STT emulator hears exactly TEXT); "
                             "repeatable")
    parser.add_argument("--audio", default="silence", metavar="silence|noise|WAV",
                        help="what the caller sends otherwise (a WAV plays once, then silence) [default silence]")
    parser.add_argument("--record", default=None, metavar="WAV",
                        help="record what the caller hears to a WAV file (its folder must exist)")
    parser.add_argument("--lenient", action="store_true",
                        help="ignore what Asterisk 20.15+ would refuse instead of hanging up on it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _port(raw: str) -> int:
    """--port is checked as BRIDGE_PORT is, and its error names the flag."""
    try:
        return CallerSettings.load({}, port=raw).port
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _seconds(raw: str) -> float:
    """A duration option: a finite number of seconds >= 0 (argparse names the option in its error)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {raw!r}")
    return value


def _uuid(raw: str) -> uuid_module.UUID:
    try:
        return uuid_module.UUID(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a UUID such as 0b4e8a5c-1f0e-4c1e-9a6d-3c2b1a0f9e8d, got {raw!r}") from None


def _check_record_path(path: str) -> None:
    """`--record`: refuse before the call what would fail after it (the recording would be lost)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ValueError(f"--record {path}: is a folder; give a file name, e.g. {target / 'call.wav'}")
    if not folder.is_dir():
        raise ValueError(f"--record {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--record {path}: the folder {folder} is not writable")


def _check_audio(audio: str) -> None:
    if audio not in ("silence", "noise"):
        try:
            read_wav(audio)
        except ValueError as exc:
            raise ValueError(f"--audio: {exc}") from None


def run(args: argparse.Namespace) -> int:
    target = CallerSettings.load(host=args.host, port=args.port)  # a bad variable: ConfigError, exit 2
    args.host, args.port = target.host, target.port
    call_uuid = args.uuid or uuid_module.uuid4()
    try:
        _check_audio(args.audio)
        if args.record is not None:
            _check_record_path(args.record)
    except ValueError as exc:
        return _fail(args, call_uuid, str(exc), 2)
    try:
        report = asyncio.run(place_call(
            args.host, args.port, duration_s=args.duration or None, uuid=call_uuid, dtmf=args.dtmf,
            speech_at=args.speech_at, speech_s=args.speech_for, say=args.say, audio=args.audio,
            keep_audio=args.record is not None, strict=not args.lenient,
        ))
    except (TimeoutError, OSError) as exc:
        return _fail(args, call_uuid, f"cannot connect to {args.host}:{args.port}: {exc or 'timed out'}", 1)
    except ValueError as exc:
        return _fail(args, call_uuid, str(exc), 2)
    status = 1 if report.error else 0
    if args.record is not None:
        try:
            write_wav(args.record, report.audio)
        except OSError as exc:
            report.error = report.error or f"--record {args.record}: cannot write it: {exc.strerror or exc}"
            print(f"voice-bridge call: --record {args.record}: cannot write it: {exc.strerror or exc}",
                  file=sys.stderr)
            status = 1
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for key, value in report.to_dict().items():
            print(f"{key:>20}: {value}")
    return status


def _fail(args: argparse.Namespace, call_uuid: uuid_module.UUID, message: str, status: int) -> int:
    """A call that could not be placed: the message on stderr, and with --json a report with the same keys
    as a placed call's, `hangup` "not-placed" and the message in `error`, so a script always gets JSON."""
    print(f"voice-bridge call: {message}", file=sys.stderr)
    if args.json:
        report = CallReport(uuid=str(call_uuid), hangup="not-placed", error=message, duration_s=0.0,
                            first_frame_ms=None, first_audio_ms=None, realtime_ratio=None, worst_burst_frames=0,
                            worst_gap_ms=None, frames=0, bytes=0, frames_sent=0, dtmf_sent=[],
                            received_hangup=False)
        print(json.dumps(report.to_dict()))
    return status
