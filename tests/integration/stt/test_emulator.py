"""The STT emulator: it hears tone-coded text at the phone's rate, in mu-law and at 16 kHz, speaks the Scribe
realtime protocol to the official SDK's client, and answers OpenAI-style transcription requests."""

from __future__ import annotations

import asyncio
import audioop
import base64

import httpx
import pytest
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.realtime import AudioFormat, CommitStrategy, RealtimeEvents

from voice.emulators.stt import ToneListener
from voice.emulators.tone_code import identify, synthesize_pcm
from voice.stt.openai import wav_bytes

GAP = b"\x00" * 1600  # 100 ms of silence between words


def test_identify_reads_tone_code_at_8k_and_after_mu_law():
    pcm = synthesize_pcm("да, конечно", 8000)
    assert identify(pcm) == ["да, конечно"]
    assert identify(audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)) == ["да, конечно"]


@pytest.mark.parametrize("split", [1, 160, 333, 4000])
def test_tone_listener_hears_words_fed_in_any_pieces(split):
    audio = synthesize_pcm("нет", 8000) + GAP + synthesize_pcm("спасибо", 8000) + GAP
    listener = ToneListener()
    for i in range(0, len(audio), split):
        listener.feed(audio[i:i + split])
    assert listener.text == "нет спасибо"
    assert listener.commit() == "нет спасибо"
    assert listener.text == ""


async def test_the_official_sdk_transcribes_through_the_emulator(emulators):
    client = AsyncElevenLabs(api_key=emulators.key, base_url=emulators.url)
    connection = await client.speech_to_text.realtime.connect({
        "model_id": "scribe_v2_realtime", "audio_format": AudioFormat.ULAW_8000, "sample_rate": 8000,
        "commit_strategy": CommitStrategy.MANUAL, "language_code": "ru",
    })
    got: dict[str, list] = {"started": [], "partial": [], "committed": [], "error": []}
    done = asyncio.Event()
    connection.on(RealtimeEvents.SESSION_STARTED, lambda d: got["started"].append(d))
    connection.on(RealtimeEvents.PARTIAL_TRANSCRIPT, lambda d: got["partial"].append(d["text"]))
    connection.on(RealtimeEvents.COMMITTED_TRANSCRIPT, lambda d: (got["committed"].append(d["text"]), done.set()))
    connection.on(RealtimeEvents.ERROR, lambda d: got["error"].append(d))
    ulaw = audioop.lin2ulaw(synthesize_pcm("да", 8000) + GAP, 2)
    for i in range(0, len(ulaw), 800):
        await connection.send({"audio_base_64": base64.b64encode(ulaw[i:i + 800]).decode()})
    await connection.commit()
    await asyncio.wait_for(done.wait(), 5)
    await connection.close()
    assert got["committed"] == ["да"] and not got["error"]
    assert got["started"][0]["config"]["audio_format"] == "ulaw_8000"
    assert got["partial"] and got["partial"][-1] == "да"
    query = emulators.stt.stats.ws_queries[-1]["query"]
    assert query == {"model_id": "scribe_v2_realtime", "audio_format": "ulaw_8000", "commit_strategy": "manual",
                     "language_code": "ru", "include_timestamps": "false"}


async def test_the_sdk_sees_an_auth_error_for_a_wrong_key(emulators):
    client = AsyncElevenLabs(api_key="wrong", base_url=emulators.url)
    connection = await client.speech_to_text.realtime.connect(
        {"model_id": "scribe_v2_realtime", "audio_format": AudioFormat.PCM_8000, "sample_rate": 8000})
    errors: list = []
    closed = asyncio.Event()
    connection.on(RealtimeEvents.AUTH_ERROR, errors.append)
    connection.on(RealtimeEvents.CLOSE, lambda *a: closed.set())
    await asyncio.wait_for(closed.wait(), 5)
    assert errors and errors[0]["message_type"] == "auth_error"


async def test_openai_endpoint_transcribes_a_wav(emulators):
    async with httpx.AsyncClient() as client:
        wav = wav_bytes(synthesize_pcm("да", 16000), 16000)
        ok = await client.post(f"{emulators.url}/v1/audio/transcriptions",
                               headers={"Authorization": f"Bearer {emulators.key}"},
                               data={"model": "whisper-1", "language": "ru"},
                               files={"file": ("a.wav", wav, "audio/wav")})
        assert ok.status_code == 200 and ok.json() == {"text": "да"}
        no_key = await client.post(f"{emulators.url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                                   files={"file": ("a.wav", wav, "audio/wav")})
        assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
        no_file = await client.post(f"{emulators.url}/v1/audio/transcriptions",
                                    headers={"Authorization": f"Bearer {emulators.key}"}, data={"model": "whisper-1"},
                                    files={"other": ("x", b"x")})
        assert no_file.status_code == 400 and "file" in no_file.json()["error"]["message"]


async def test_knobs_and_stats_are_under_the_stt_control_prefix(emulators):
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{emulators.url}/_emulator/stt/knobs", json={"final_delay_ms": 50})
        assert r.status_code == 200 and emulators.stt.knobs.final_delay_ms == 50.0
        bad = await client.post(f"{emulators.url}/_emulator/stt/knobs", json={"nope": 1})
        assert bad.status_code == 400 and "unknown knob" in bad.json()["error"]
        stats = (await client.get(f"{emulators.url}/_emulator/stt/stats")).json()
        assert stats["ws_connections"] == 0
