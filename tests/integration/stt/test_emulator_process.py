"""`voice-bridge emulator` (as a process) serves speech-to-text beside TTS; the STT emulator also runs alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx

from support.speech import spoken
from voice.config import TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, EmulatorProcess
from voice.http import aclose_shared_client
from voice.stt import STTConfig, create_recognizer
from voice.stt.events import FinalTranscript


async def test_the_emulator_process_serves_stt_on_the_tts_url():
    with EmulatorProcess() as emu:
        stt = STTConfig(stt_provider="elevenlabs")
        recognizer = create_recognizer(stt, TTSConfig(api_key=DEFAULT_API_KEY, base_url=emu.url))
        await recognizer.start()
        try:
            for frame in spoken("да"):
                recognizer.feed(frame)
            final = None
            async with asyncio.timeout(10):
                async for event in recognizer.events():
                    if isinstance(event, FinalTranscript):
                        final = event
                        break
        finally:
            await recognizer.close()
            await aclose_shared_client()
        assert final is not None and final.text == "да"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{emu.url}/_emulator/stt/stats")).json()
        assert stats["commits"] == 1


def test_the_stt_emulator_runs_alone_and_names_bad_knobs():
    bad = subprocess.run([sys.executable, "-m", "voice.emulators.stt", "--knobs", '{"nope": 1}'],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "unknown knob 'nope'" in bad.stderr


async def test_the_stt_emulator_alone_in_process_has_its_control_endpoints():
    from voice.emulators.stt import STTEmulator

    async with STTEmulator() as emu, httpx.AsyncClient() as client:
        knobs = (await client.post(f"{emu.url}/_emulator/knobs", json={"partials": False})).json()
        assert knobs["partials"] is False
        r = await client.post(f"{emu.url}/v1/audio/transcriptions", headers={"Authorization": "Bearer x"},
                              data={"model": "whisper-1"}, files={"file": ("a.wav", b"RIFF")})
        assert r.status_code == 401
