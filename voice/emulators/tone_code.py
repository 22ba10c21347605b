"""The emulator's voice: deterministic audio that encodes its text, and the decoder tests use to read it.

Every character becomes 60 ms of sound: three 20 ms tones, each one of 32 frequencies (500 Hz to 2980 Hz in
80 Hz steps), carrying 5 bits of the character's code point (15 bits in all: every character below U+8000,
which covers Latin, Cyrillic and punctuation; higher code points are encoded modulo 0x8000). A tone is
exactly one 20 ms frame at 8 kHz, so audio that went through the bridge can be read back frame by frame.

Two ways for a test to check what a caller heard:
- `expected_frames(text, output_format)`: the exact 8 kHz frames a correct client produces for the emulator's
  audio of `text` (synthesized at that format, converted with `FrameStream`). Byte equality, the strictest.
- `identify(pcm)`: the texts found in 8 kHz s16le audio (runs of sound between silences), for audio that
  was mixed with other things (fragments, silence, fillers). It assumes the audio starts on a 20 ms frame
  boundary of the synthesized stream, which holds for everything the bridge sends.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from collections.abc import Sequence
from functools import cache

from voice.audio import FRAME_BYTES, SAMPLE_RATE, FrameStream, Loudness, encode_g711, rms
from voice.config import G711_FORMATS, PCM_RATES

CHAR_MS = 60
SYMBOL_MS = 20
SYMBOLS_PER_CHAR = 3
LEVELS = 32
BASE_HZ = 500.0
STEP_HZ = 80.0
AMPLITUDE = 8000
FADE_MS = 2
SILENCE_RMS = 300  # frames below this are silence between texts

_WINDOW_START = 16  # analyse the steady middle of each frame, away from the fades and resampler delay
_WINDOW_LEN = 128


def symbols_of(ch: str) -> tuple[int, int, int]:
    """The three 5-bit symbols of a character (its code point modulo 0x8000, high bits first)."""
    cp = ord(ch) & 0x7FFF
    return (cp >> 10) & 31, (cp >> 5) & 31, cp & 31


def frequency(level: int) -> float:
    return BASE_HZ + STEP_HZ * level


@cache
def _tone(level: int, rate: int) -> bytes:
    """One 20 ms tone at `rate` as s16le, with 2 ms fades so symbols do not click."""
    n = rate * SYMBOL_MS // 1000
    fade = max(1, rate * FADE_MS // 1000)
    step = 2 * math.pi * frequency(level) / rate
    samples = array(
        "h",
        (round(AMPLITUDE * min(1.0, i / fade, (n - 1 - i) / fade) * math.sin(step * i)) for i in range(n)),
    )
    if sys.byteorder == "big":  # pragma: no cover - the wire format is little-endian
        samples.byteswap()
    return samples.tobytes()


def synthesize_pcm(text: str, rate: int) -> bytes:
    """s16le mono audio of `text` at `rate` Hz (60 ms per character)."""
    return b"".join(_tone(s, rate) for ch in text for s in symbols_of(ch))


def synthesize(text: str, output_format: str) -> bytes:
    """The emulator's audio for `text` in an ElevenLabs `output_format` (`pcm_*`, `ulaw_8000`, `alaw_8000`)."""
    if output_format in PCM_RATES:
        return synthesize_pcm(text, PCM_RATES[output_format])
    if output_format in G711_FORMATS:
        return encode_g711(synthesize_pcm(text, SAMPLE_RATE), output_format[:4])
    raise ValueError(f"the emulator cannot produce {output_format!r}")


def duration_s(text: str) -> float:
    return len(text) * CHAR_MS / 1000


def expected_frames(text: str | Sequence[str], output_format: str = "pcm_16000",
                    target_dbfs: float | None = None) -> list[bytes]:
    """The 8 kHz 20 ms frames a correct client plays for the emulator's audio of `text`.

    `text` may be a list of pieces (one WebSocket turn): their audio is one continuous stream.
    `target_dbfs`: the level a client that levels synthesis (`AUDIO_TARGET_DBFS`) brings it to.
    """
    pieces = [text] if isinstance(text, str) else list(text)
    stream = FrameStream(output_format, loudness=Loudness(target_dbfs) if target_dbfs is not None else None)
    frames: list[bytes] = []
    for piece in pieces:
        frames += stream.feed(synthesize(piece, output_format))
    return frames + stream.flush()


# --- reading it back ----------------------------------------------------------------------------------


def _basis() -> list[tuple[array, array]]:
    hann = [0.5 - 0.5 * math.cos(2 * math.pi * i / (_WINDOW_LEN - 1)) for i in range(_WINDOW_LEN)]
    out = []
    for level in range(LEVELS):
        w = 2 * math.pi * frequency(level) / SAMPLE_RATE
        out.append(
            (
                array("d", (hann[i] * math.cos(w * i) for i in range(_WINDOW_LEN))),
                array("d", (hann[i] * math.sin(w * i) for i in range(_WINDOW_LEN))),
            )
        )
    return out


_BASIS: list[tuple[array, array]] = []


def _symbol(window: array) -> int:
    """The tone level with the most energy in a 128-sample window (a windowed DFT at the 32 candidates)."""
    if not _BASIS:
        _BASIS.extend(_basis())
    best, best_power = 0, -1.0
    for level, (cos_v, sin_v) in enumerate(_BASIS):
        re = sum(map(operator.mul, window, cos_v))
        im = sum(map(operator.mul, window, sin_v))
        power = re * re + im * im
        if power > best_power:
            best, best_power = level, power
    return best


def identify(pcm: bytes) -> list[str]:
    """The texts spoken in 8 kHz s16le audio, one per run of sound between silent frames.

    Audio must start on a frame boundary of the synthesized stream (true for frames the bridge sends).
    A run's trailing frames that do not make a whole character are ignored.
    """
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
    texts: list[str] = []
    run: list[bytes] = []
    for frame in [*frames, b""]:
        if frame and rms(frame) >= SILENCE_RMS:
            run.append(frame)
            continue
        if run:
            texts.append(_decode_run(run))
            run = []
    return [t for t in texts if t]


def _decode_run(frames: list[bytes]) -> str:
    chars = []
    for i in range(0, len(frames) - SYMBOLS_PER_CHAR + 1, SYMBOLS_PER_CHAR):
        code = 0
        for frame in frames[i : i + SYMBOLS_PER_CHAR]:
            samples = array("h")
            samples.frombytes(frame)
            if sys.byteorder == "big":  # pragma: no cover
                samples.byteswap()
            code = (code << 5) | _symbol(samples[_WINDOW_START : _WINDOW_START + _WINDOW_LEN])
        chars.append(chr(code))
    return "".join(chars)
