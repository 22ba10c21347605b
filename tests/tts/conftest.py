"""Fixtures for the TTS tests: a fresh in-process ElevenLabs emulator per test, on a real loopback port."""

from __future__ import annotations

import pytest

from voice.config import TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator
from voice.tts_manager import aclose_shared_client


@pytest.fixture
async def emulator():
    emu = Emulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def tts_config(emulator) -> TTSConfig:
    """Settings pointing at the emulator, with short timeouts and backoff so failures are quick."""
    config = TTSConfig(
        api_key=DEFAULT_API_KEY,
        base_url=emulator.url,
        voice_id=DEFAULT_VOICES[0],
        connect_timeout_s=2.0,
        read_timeout_s=5.0,
        retry_backoff_s=0.01,
    )
    yield config
    await aclose_shared_client()
