"""The official `elevenlabs` Python SDK, pointed at the emulator, streams from it: the emulator speaks the real API.

The SDK's WebSocket client forces `wss://` onto the base URL, so that test serves the emulator over TLS
with a throw-away certificate authority (`trustme`) that `SSL_CERT_FILE` makes the SDK trust.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme
from elevenlabs.client import AsyncElevenLabs, ElevenLabs
from elevenlabs.core.api_error import ApiError

from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator, synthesize

VOICE = DEFAULT_VOICES[0]


async def test_sdk_streams_over_http(emulator):
    client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
    chunks = [
        chunk
        async for chunk in client.text_to_speech.stream(
            VOICE, text="Добрый день", model_id="eleven_flash_v2_5", output_format="ulaw_8000",
            optimize_streaming_latency=4,
        )
    ]
    assert b"".join(chunks) == synthesize("Добрый день", "ulaw_8000")
    request = emulator.stats.requests[-1]
    assert request["body"]["model_id"] == "eleven_flash_v2_5"
    assert request["query"]["optimize_streaming_latency"] == "4"


async def test_sdk_sees_the_emulators_errors_as_the_apis(emulator):
    client = AsyncElevenLabs(api_key="wrong", base_url=emulator.url)
    with pytest.raises(ApiError) as info:
        async for _ in client.text_to_speech.stream(VOICE, text="x", output_format="pcm_16000"):
            pass
    assert info.value.status_code == 401
    assert info.value.body["detail"]["status"] == "invalid_api_key"


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """A test CA the SDK trusts through SSL_CERT_FILE, and a server context for 127.0.0.1."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    return server


async def test_sdk_streams_over_the_websocket(tls):
    async with Emulator(ssl_context=tls) as emulator:
        def convert() -> bytes:
            client = ElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
            pieces = iter(["Hello ", "there, ", "friend."])
            return b"".join(client.text_to_speech.convert_realtime(
                VOICE, text=pieces, model_id="eleven_flash_v2_5", output_format="pcm_16000"))

        audio = await asyncio.to_thread(convert)  # the SDK's WebSocket client is synchronous
        assert audio == synthesize("Hello there, friend.", "pcm_16000")
        assert emulator.stats.ws_connections == 1
        first = emulator.stats.ws_first_messages[0]
        assert first["text"] == " " and first["generation_config"] == {"chunk_length_schedule": [50]}
        assert emulator.stats.ws_queries[0]["query"] == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000"}
        assert emulator.stats.ws_close_codes[1000] == 1


async def test_tts_manager_speaks_https_and_wss_like_production(tls):
    from voice.config import TTSConfig
    from voice.tts_manager import TTSManager, WebSocketConnectionManager, aclose_shared_client, iter_llm_audio

    async with Emulator(ssl_context=tls) as emulator:
        config = TTSConfig(api_key=DEFAULT_API_KEY, base_url=emulator.url, voice_id=VOICE)
        assert config.ws_base_url.startswith("wss://")
        tts = TTSManager(config, WebSocketConnectionManager(config.model_copy()))
        try:
            http_audio = b"".join([c async for c in tts.stream_static_text("Secure")])
            text_queue, audio_queue = await tts.start_llm_stream()
            await text_queue.put("Secure ")
            await text_queue.put(None)
            ws_audio = b"".join([c async for c in iter_llm_audio(audio_queue)])
        finally:
            await tts.aclose()
            await aclose_shared_client()
    assert http_audio == ws_audio == synthesize("Secure", "pcm_16000")
