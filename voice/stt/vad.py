"""Per-frame voice activity: webrtcvad's speech decision, gated by an adaptive energy floor.

webrtcvad (a GMM over six frequency bands, C, about 2 µs a 20 ms frame here) says "speech" to almost anything with
energy in the speech bands, including steady hiss at -45 dBFS; on a phone line that is the line itself.
So a frame counts as voiced only when webrtcvad says so *and* its energy is above both an absolute minimum
(`min_rms`: hiss and comfort noise never pass) and `floor_ratio` times a noise floor that follows the quiet
frames quickly and loud ones slowly (a 20 s time constant): a steady background stops counting within
about 8 s (and tone-coded test phrases of up to about 130 characters are heard whole),
while speech, which keeps dipping between syllables, keeps the floor low. What is left for the endpointer
is to tell a cough-length blip from speech by its duration.

Input is one 20 ms frame in the call's format (`pcm_8000`: 320 bytes, `pcm_16000`: 640, `ulaw_8000`: 160);
mu-law is decoded to linear first (webrtcvad takes 16-bit PCM only).
"""

from __future__ import annotations

import audioop
from typing import Protocol

import webrtcvad  # type: ignore[import-untyped]

from voice.formats import bytes_per_sample, source_rate

__all__ = ["FRAME_BYTES_BY_FORMAT", "RATE_BY_FORMAT", "FrameClassifier", "VoiceActivityDetector", "to_pcm"]

FRAME_MS = 20
# webrtcvad hears 8 or 16 kHz: the formats of voice.formats at those rates that the recognizers send.
RATE_BY_FORMAT = {fmt: source_rate(fmt) for fmt in ("pcm_8000", "pcm_16000", "ulaw_8000")}
FRAME_BYTES_BY_FORMAT = {fmt: rate * FRAME_MS // 1000 * bytes_per_sample(fmt) for fmt, rate in RATE_BY_FORMAT.items()}
FLOOR_FALL = 0.2  # per quiet frame: the floor drops to a quieter background within a few frames
FLOOR_RISE = 0.001  # per loud frame: a steady louder background stops counting after about 8 s


class FrameClassifier(Protocol):
    """What the endpointer's owner needs: is this 20 ms frame speech?"""

    def is_speech(self, frame: bytes) -> bool: ...


def to_pcm(frame: bytes, audio_format: str) -> bytes:
    """s16le of a frame in `audio_format` (mu-law decoded; PCM as it is)."""
    return audioop.ulaw2lin(frame, 2) if audio_format == "ulaw_8000" else frame


def check_format(audio_format: str) -> None:
    if audio_format not in RATE_BY_FORMAT:
        raise ValueError(f"unsupported audio format {audio_format!r} for speech recognition; "
                         f"use one of {', '.join(RATE_BY_FORMAT)}")


class VoiceActivityDetector:
    """`is_speech(frame)` for 20 ms frames of one call. Keeps the call's noise floor: one per call."""

    def __init__(self, audio_format: str = "pcm_8000", *, aggressiveness: int = 2, min_rms: int = 200,
                 floor_ratio: float = 3.0) -> None:
        check_format(audio_format)
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"VAD aggressiveness must be 0-3, got {aggressiveness}")
        self.audio_format = audio_format
        self.rate = RATE_BY_FORMAT[audio_format]
        self.frame_bytes = FRAME_BYTES_BY_FORMAT[audio_format]
        self.min_rms = min_rms
        self.floor_ratio = floor_ratio
        self.floor = float(min_rms) / floor_ratio if floor_ratio else 0.0
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        """True when the frame is voiced. ValueError names a frame of the wrong size."""
        if len(frame) != self.frame_bytes:
            raise ValueError(f"a 20 ms {self.audio_format} frame has {self.frame_bytes} bytes, got {len(frame)}")
        pcm = to_pcm(frame, self.audio_format)
        energy = audioop.rms(pcm, 2)
        floor = self.floor
        self.floor = floor + (energy - floor) * (FLOOR_FALL if energy < floor else FLOOR_RISE)
        if energy < self.min_rms or energy < floor * self.floor_ratio:
            return False
        return bool(self._vad.is_speech(pcm, self.rate))
