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


async def test_a_recognizer_reaches_an_stt_emulator_of_its_own_and_the_commit_and_final_are_stamped():
    """STT_BASE_URL points Scribe at a second emulator (the TTS base URL is nowhere); the emulator stamps,
    on CLOCK_MONOTONIC, when the commit arrived and when the final went out, over its control endpoint."""
    import time

    from voice.emulators.stt import STTEmulator, STTKnobs

    async with STTEmulator(api_key=DEFAULT_API_KEY, knobs=STTKnobs(final_delay_ms=80)) as emu:
        stt = STTConfig(stt_provider="elevenlabs", stt_base_url=emu.url)
        recognizer = create_recognizer(stt, TTSConfig(api_key=DEFAULT_API_KEY, base_url="http://127.0.0.1:9"))
        await recognizer.start()
        try:
            for frame in spoken("да"):
                recognizer.feed(frame)
            before_commit = time.monotonic()
            recognizer.commit()
            async with asyncio.timeout(10):
                async for event in recognizer.events():
                    if isinstance(event, FinalTranscript):
                        break
            after_final = time.monotonic()
        finally:
            await recognizer.close()
        async with httpx.AsyncClient() as client:
            log = (await client.get(f"{emu.url}/_emulator/stats")).json()["commit_log"]
    assert [entry["text"] for entry in log] == ["да"]
    entry = log[0]
    assert before_commit - 1.0 < entry["commit_at"] <= entry["final_at"] <= after_final
    assert entry["final_at"] - entry["commit_at"] >= 0.08  # the knob's delay is inside the service's time
