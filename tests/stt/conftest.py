"""The ElevenLabs emulator with speech-to-text mounted, as the bridge would meet it."""

from __future__ import annotations

import pytest

from voice.emulators.elevenlabs import DEFAULT_API_KEY, Emulator
from voice.emulators.stt import STTEmulator, mount_stt


class Mounted:
    def __init__(self, tts: Emulator, stt: STTEmulator) -> None:
        self.tts, self.stt, self.url, self.key = tts, stt, tts.url, DEFAULT_API_KEY


@pytest.fixture
async def emulators():
    tts = Emulator()
    stt = mount_stt(tts)
    async with tts:
        yield Mounted(tts, stt)

