"""What the caller heard, compared with what the bridge should have played.

The phone hears mu-law (PCMU): lossy. Expected audio (the fragments as `load-audio` stores them, the
emulator's tones for the synthesized part) goes through a mu-law round trip first, and frames are compared
with a tolerance (the RMS of the difference against the frame's own level), one 20 ms frame at a time:
Asterisk turns each 20 ms AudioSocket frame of the bridge into one RTP packet, so frame boundaries hold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

from asterisk.harness import FRAGMENTS
from asterisk.phone import CallView, audioop
from voice.cache import read_audio_chunks
from voice.config import CacheConfig
from voice.emulators.tone_code import SILENCE_RMS, expected_frames, identify

EDGE_SILENCE_RMS = 50  # a fragment's leading/trailing frames this quiet may be missing at a call's edges
TTS_FORMAT = "pcm_16000"  # ELEVENLABS_OUTPUT_FORMAT's default, which the stack does not change
LEVEL = CacheConfig().loudness_target  # AUDIO_TARGET_DBFS: what load-audio and the synthesis levelling aim at
GREETING = ("hello", "your_cost_is", "{tts}", "rubles", "menu")  # bridge/data/dialogue.toml, node greeting


@cache
def fragment(name: str) -> tuple[bytes, ...]:
    """A fragment's 8 kHz frames as the bridge plays them (the WAV converted and cut like load-audio)."""
    return tuple(read_audio_chunks(str(FRAGMENTS / f"{name}.wav"), 20, LEVEL).chunks)


@cache
def tts(text: str) -> tuple[bytes, ...]:
    """The emulator's audio of `text` as the bridge plays it."""
    return tuple(expected_frames(text, TTS_FORMAT, LEVEL))


def greeting(amount: str) -> list[tuple[str, tuple[bytes, ...]]]:
    return [(f"tts {amount}", tts(amount)) if n == "{tts}" else (n, fragment(n)) for n in GREETING]


def _roundtrip(lin: bytes) -> bytes:
    return audioop.ulaw2lin(audioop.lin2ulaw(lin, 2), 2)


def _error(got: bytes, want_rt: bytes) -> tuple[int, int]:
    """(RMS of the difference, RMS of the wanted frame)."""
    diff = audioop.add(got, audioop.mul(want_rt, 2, -1.0), 2)
    return audioop.rms(diff, 2), audioop.rms(want_rt, 2)


def close(got: bytes, want_rt: bytes) -> bool:
    err, level = _error(got, want_rt)
    return err <= 0.06 * level + 40


@dataclass
class Heard:
    """A call's received audio, decoded."""

    view: CallView

    def __post_init__(self) -> None:
        self.ulaw, self.times = self.view.timeline()
        self.lin = [audioop.ulaw2lin(f, 2) for f in self.ulaw]
        self.level = [audioop.rms(f, 2) for f in self.lin]
        self.worst_error = 0.0  # largest relative error among frames accepted by find()
        self.head_lost = 0  # frames missing at the start of the call (find_at_start)

    def __len__(self) -> int:
        return len(self.lin)

    def time(self, index: int) -> float:
        """Arrival time of frame `index` (or of the nearest received frame before it; frame 0 for an index
        before the first, which find() gives for a prompt whose first frames were lost)."""
        for i in range(min(max(index, 0), len(self.times) - 1), -1, -1):
            if self.times[i] is not None:
                return self.times[i]
        raise IndexError(index)

    def index_after(self, t: float) -> int:
        """The first frame that arrived at or after time t."""
        for i, ti in enumerate(self.times):
            if ti is not None and ti >= t:
                return i
        return len(self.times)

    def find(self, want: tuple[bytes, ...], start: int = 0, end: int | None = None) -> int | None:
        """Where all of `want` was heard, frame after frame, starting at or after `start` (before `end`).

        Silent frames at the very start and end of `want` may be missing: on the Dial(AudioSocket) path
        Asterisk drops the bridge's first frame of the call (sent before the caller is bridged) and its last
        frame before the hang-up (both silent in the project's fragments). The returned index is where the
        whole of `want` would begin."""
        levels = [audioop.rms(f, 2) for f in want]
        lead = next((k for k, v in enumerate(levels) if v > EDGE_SILENCE_RMS), len(want))
        trail = next((k for k, v in enumerate(reversed(levels)) if v > EDGE_SILENCE_RMS), 0)
        core = want[lead:len(want) - trail]
        if not core:
            return None
        want_rt = [_roundtrip(f) for f in core]
        end = len(self.lin) - len(core) + 1 if end is None else min(end, len(self.lin) - len(core) + 1)
        # anchor on the loudest wanted frame: few positions pass it
        anchor = max(range(len(want_rt)), key=lambda k: audioop.rms(want_rt[k], 2))
        for i in range(max(start, 0), end):
            if not close(self.lin[i + anchor], want_rt[anchor]):
                continue
            if all(close(self.lin[i + k], want_rt[k]) for k in range(len(want_rt))):
                for k in range(len(want_rt)):
                    err, level = _error(self.lin[i + k], want_rt[k])
                    if level > SILENCE_RMS:
                        self.worst_error = max(self.worst_error, err / level)
                return i - lead  # negative when the lost frames were the call's very first
        return None

    def find_at_start(self, want: tuple[bytes, ...], max_lost: int) -> int | None:
        """-lost if the heard audio begins with `want` minus its first `lost` frames, 1 <= lost <= max_lost
        (the index where the whole of `want` would have begun; `lost` is kept in `head_lost`), else None."""
        for lost in range(1, max_lost + 1):
            rest = want[lost:]
            if len(rest) > len(self.lin):
                return None
            if all(close(self.lin[k], _roundtrip(rest[k])) for k in range(len(rest) - 1)):
                self.head_lost = lost
                return -lost
        return None

    def explain(self, want: tuple[bytes, ...], start: int = 0) -> str:
        """Why `want` was not found: the best alignment, its mismatching frames, lost RTP packets."""
        want_rt = [_roundtrip(f) for f in want]
        if len(self.lin) < len(want) + start:
            return f"only {len(self.lin)} frames heard"
        best = max(range(start, len(self.lin) - len(want) + 1),
                   key=lambda s: sum(close(self.lin[s + k], want_rt[k]) for k in range(len(want))))
        bad = [(k, *_error(self.lin[best + k], want_rt[k])) for k in range(len(want))
               if not close(self.lin[best + k], want_rt[k])]
        seqs = [r.seq for r in self.view.heard]
        lost = [(a, b) for a, b in itertools.pairwise(seqs) if (b - a) & 0xFFFF != 1]
        return (f"best alignment at frame {best}: {len(want) - len(bad)}/{len(want)} frames match; "
                f"mismatches (frame, error rms, level rms): {bad[:10]}; RTP sequence breaks: {lost[:10]}")

    def texts(self, start: int, end: int) -> list[str]:
        """The emulator's texts heard in frames [start, end) (voice.emulators.tone_code.identify)."""
        return identify(b"".join(self.lin[start:end]))

    def loud_frames(self, start: int, end: int | None = None) -> list[int]:
        return [i for i in range(start, len(self.lin) if end is None else end) if self.level[i] >= SILENCE_RMS]


def check_greeting(heard: Heard, amount: str, start: int = 0, head_loss: int = 0) -> list[tuple[str, int, int]]:
    """Assert the whole greeting was heard in order from frame `start`: each fragment and the synthesized
    amount whole; returns (item, first frame, frames) for each.

    `head_loss`: how many of the call's very first frames may be missing (the Dial(AudioSocket) path drops
    what the bridge sends before Dial() has bridged the caller; see docs/reference/asterisk-tested.md). How many
    were lost is kept in `heard.head_lost`."""
    found = []
    pos = start
    for n, (name, frames) in enumerate(greeting(amount)):
        i = heard.find(frames, pos)
        if i is None and n == 0 and start == 0 and head_loss:
            i = heard.find_at_start(frames, head_loss)
        assert i is not None, (
            f"{name} ({len(frames)} frames) not heard whole after frame {pos} (of {len(heard)}); "
            f"heard so far: {found}; {heard.explain(frames, pos)}"
        )
        found.append((name, i, len(frames)))
        pos = i + len(frames)
    _tts_name, tts_start, tts_len = found[2]
    assert heard.texts(tts_start, tts_start + tts_len) == [amount], heard.texts(tts_start, tts_start + tts_len)
    return found
