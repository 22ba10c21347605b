"""Caller audio for the STT tests: tone-coded words with silence around them."""

from __future__ import annotations

from voice.audio import to_frames
from voice.emulators.tone_code import synthesize_pcm


def spoken(text: str, *, lead_s: float = 0.2, tail_s: float = 1.0) -> list[bytes]:
    """8 kHz frames of a caller saying `text` (tone-coded), with silence around it."""
    silence = b"\x00" * 320
    return [silence] * round(lead_s * 50) + to_frames(synthesize_pcm(text, 8000)) + [silence] * round(tail_s * 50)
