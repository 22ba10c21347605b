"""The ElevenLabs emulator with speech-to-text mounted, as the bridge would meet it."""

from __future__ import annotations

import pytest

from voice.emulators.elevenlabs import DEFAULT_API_KEY, Emulator
from voice.emulators.stt import STTEmulator, mount_stt
from voice.emulators.tone_code import synthesize_pcm
from voice.audio import to_frames


class Mounted:
    def __init__(self, tts: Emulator, stt: STTEmulator) -> None:
        self.tts, self.stt, self.url, self.key = tts, stt, tts.url, DEFAULT_API_KEY


@pytest.fixture
async def emulators():
    tts = Emulator()
    stt = mount_stt(tts)
    async with tts:
        yield Mounted(tts, stt)


def spoken(text: str, *, lead_s: float = 0.2, tail_s: float = 1.0) -> list[bytes]:
    """8 kHz frames of a caller saying `text` (tone-coded), with silence around it."""
    silence = b"\x00" * 320
    return [silence] * round(lead_s * 50) + to_frames(synthesize_pcm(text, 8000)) + [silence] * round(tail_s * 50)
