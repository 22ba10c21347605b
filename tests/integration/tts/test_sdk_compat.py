"""The official `elevenlabs` Python SDK, pointed at the emulator, streams from it: the emulator speaks the real API.

The SDK's WebSocket client forces `wss://` onto the base URL, so that test serves the emulator over TLS
with a throw-away certificate authority (`trustme`) that `SSL_CERT_FILE` makes the SDK trust.
"""

from __future__ import annotations

import asyncio
import base64
import ssl

import pytest
import trustme
from elevenlabs.client import AsyncElevenLabs, ElevenLabs
from elevenlabs.core.api_error import ApiError

from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator, Knobs, synthesize

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


# --- the rest of the API the SDK calls: timestamps, voices, models, user ------------------------------------


def speech_frames_of(audio: bytes, output_format: str) -> list[bytes]:
    """The audio as the 8 kHz frames a client plays (what `identify` reads)."""
    from voice.audio import FrameStream

    stream = FrameStream(output_format)
    return stream.feed(audio) + stream.flush()


async def test_sdk_converts_with_timestamps_and_the_alignment_matches_the_tones(emulator):
    from voice.emulators.tone_code import CHAR_MS, identify

    client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
    text = "Добрый день"
    result = await client.text_to_speech.convert_with_timestamps(
        VOICE, text=text, model_id="eleven_flash_v2_5", output_format="pcm_16000")
    audio = base64.b64decode(result.audio_base_64)
    assert audio == synthesize(text, "pcm_16000")
    alignment = result.alignment
    assert alignment is not None and result.normalized_alignment == alignment
    assert "".join(alignment.characters) == text
    assert alignment.character_start_times_seconds == [pytest.approx(i * CHAR_MS / 1000) for i in range(len(text))]
    assert alignment.character_end_times_seconds == [pytest.approx((i + 1) * CHAR_MS / 1000)
                                                     for i in range(len(text))]
    # the audio is as long as the alignment says, and decodes to the aligned characters
    assert len(audio) / 32000 == pytest.approx(alignment.character_end_times_seconds[-1])
    assert identify(b"".join(speech_frames_of(audio, "pcm_16000"))) == ["".join(alignment.characters)]
    assert emulator.stats.requests[-1]["path"] == f"/v1/text-to-speech/{VOICE}/with-timestamps"


@pytest.mark.parametrize("output_format, chunk_bytes, odd", [("ulaw_8000", 700, False),
                                                             ("pcm_22050", 1000, True)])
async def test_sdk_streams_with_timestamps_chunk_by_chunk(emulator, output_format, chunk_bytes, odd):
    from voice.emulators.tone_code import CHAR_MS, identify

    emulator.set_knobs(chunk_bytes=chunk_bytes, odd_chunks=odd)
    client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
    text = "Hello, мир!"
    chunks = [c async for c in client.text_to_speech.stream_with_timestamps(
        VOICE, text=text, output_format=output_format)]
    assert len(chunks) > 3
    audio = b"".join(base64.b64decode(c.audio_base_64) for c in chunks)
    assert audio == synthesize(text, output_format)
    bytes_per_s = 8000 if output_format == "ulaw_8000" else 44100
    offset = 0
    characters: list[str] = []
    for chunk in chunks:  # each character is announced in the chunk its audio starts in, times from the start
        size = len(base64.b64decode(chunk.audio_base_64))
        if chunk.alignment is not None:
            for start in chunk.alignment.character_start_times_seconds:
                assert offset <= start * bytes_per_s < offset + size
            characters += chunk.alignment.characters
        offset += size
    assert "".join(characters) == text
    starts = [s for c in chunks if c.alignment for s in c.alignment.character_start_times_seconds]
    assert starts == [pytest.approx(i * CHAR_MS / 1000) for i in range(len(text))]
    assert identify(b"".join(speech_frames_of(audio, output_format))) == [text]


async def test_timestamp_endpoints_answer_errors_in_the_apis_shapes(emulator):
    client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
    with pytest.raises(ApiError) as info:
        await client.text_to_speech.convert_with_timestamps("no-such-voice", text="x", output_format="pcm_16000")
    assert info.value.status_code == 404 and info.value.body["detail"]["status"] == "voice_not_found"
    with pytest.raises(ApiError) as info:
        async for _ in client.text_to_speech.stream_with_timestamps(VOICE, text="x", output_format="wav_9"):
            pass
    assert info.value.status_code == 422 and info.value.body["detail"][0]["loc"] == ["query", "output_format"]
    wrong = AsyncElevenLabs(api_key="wrong", base_url=emulator.url)
    with pytest.raises(ApiError) as info:
        await wrong.text_to_speech.convert_with_timestamps(VOICE, text="x", output_format="pcm_16000")
    assert info.value.status_code == 401 and info.value.body["detail"]["status"] == "invalid_api_key"


async def test_sdk_lists_searches_and_gets_the_configured_voices():
    async with Emulator(knobs=Knobs(voices=[VOICE, "customVoice123"])) as emulator:
        client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
        found = await client.voices.search()
        assert [v.voice_id for v in found.voices] == [VOICE, "customVoice123"]
        assert found.total_count == 2 and found.has_more is False
        assert found.voices[0].name == "Rachel" and found.voices[0].category == "premade"
        page = await client.voices.search(page_size=1)
        assert [v.voice_id for v in page.voices] == [VOICE] and page.has_more and page.next_page_token
        rest = await client.voices.search(page_size=1, next_page_token=page.next_page_token)
        assert [v.voice_id for v in rest.voices] == ["customVoice123"] and not rest.has_more
        assert [v.voice_id for v in (await client.voices.search(search="rachel")).voices] == [VOICE]
        assert [v.voice_id for v in (await client.voices.get_all()).voices] == [VOICE, "customVoice123"]
        voice = await client.voices.get("customVoice123")
        assert voice.voice_id == "customVoice123" and voice.name
        with pytest.raises(ApiError) as info:
            await client.voices.get("no-such-voice")
        assert info.value.status_code == 404 and info.value.body["detail"]["status"] == "voice_not_found"
        with pytest.raises(ApiError) as info:
            await client.voices.search(page_size=101)
        assert info.value.status_code == 422 and info.value.body["detail"][0]["loc"] == ["query", "page_size"]
        assert emulator.stats.reads["GET /v2/voices"] == 5


async def test_sdk_lists_models_with_the_default_first(emulator):
    client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
    models = await client.models.list()
    ids = [m.model_id for m in models]
    assert ids[0] == "eleven_flash_v2_5" and "eleven_turbo_v2_5" in ids
    flash = models[0]
    assert flash.can_do_text_to_speech and "ru" in [lang.language_id for lang in flash.languages]
    english_only = next(m for m in models if m.model_id == "eleven_turbo_v2")
    assert [lang.language_id for lang in english_only.languages] == ["en"]


async def test_sdk_reads_the_user_and_its_subscription(emulator):
    emulator.set_knobs(character_quota=1000)
    client = AsyncElevenLabs(api_key=DEFAULT_API_KEY, base_url=emulator.url)
    _ = [c async for c in client.text_to_speech.stream(VOICE, text="Добрый день", output_format="ulaw_8000")]
    user = await client.user.get()
    assert user.user_id and user.subscription.tier == "creator"
    assert user.subscription.character_count == len("Добрый день")
    assert user.subscription.character_limit == 1000
    subscription = await client.user.subscription.get()
    assert subscription.character_count == len("Добрый день") and subscription.status == "active"
    wrong = AsyncElevenLabs(api_key="wrong", base_url=emulator.url)
    for call in (wrong.user.get, wrong.models.list, wrong.voices.search):
        with pytest.raises(ApiError) as info:
            await call()
        assert info.value.status_code == 401 and info.value.body["detail"]["status"] == "invalid_api_key"


@pytest.mark.parametrize("path, model", [
    ("/v1/user", "User"), ("/v1/user/subscription", "Subscription"), ("/v2/voices", "GetVoicesV2Response"),
    ("/v1/voices", "GetVoicesResponse"), (f"/v1/voices/{VOICE}", "Voice"),
])
async def test_read_endpoints_validate_strictly_against_the_sdks_models(emulator, path, model):
    """The SDK parses leniently (`construct_type`): validating strictly proves every required field is there."""
    import httpx
    from elevenlabs import types

    async with httpx.AsyncClient(base_url=emulator.url) as http:
        response = await http.get(path, headers={"xi-api-key": DEFAULT_API_KEY})
    assert response.status_code == 200
    getattr(types, model).model_validate(response.json())


async def test_models_validate_strictly(emulator):
    import httpx
    from elevenlabs.types import Model

    async with httpx.AsyncClient(base_url=emulator.url) as http:
        response = await http.get("/v1/models", headers={"xi-api-key": DEFAULT_API_KEY})
    models = [Model.model_validate(m) for m in response.json()]
    assert models[0].model_id == "eleven_flash_v2_5"


def test_the_url_the_emulator_process_prints_is_the_sdks_base_url():
    """`voice-bridge emulator` prints `listening on URL`; that URL, as its --help says, is the SDK's base_url."""
    from voice.emulators.elevenlabs import EmulatorProcess

    with EmulatorProcess("--api-key", "proc-key", "--voices", "procVoice") as emu:
        client = ElevenLabs(api_key="proc-key", base_url=emu.url)
        assert [v.voice_id for v in client.voices.search().voices] == ["procVoice"]
        assert client.models.list()[0].model_id == "eleven_flash_v2_5"
        assert client.user.get().subscription.character_count == 0
        result = client.text_to_speech.convert_with_timestamps("procVoice", text="ok", output_format="pcm_8000")
        assert base64.b64decode(result.audio_base_64) == synthesize("ok", "pcm_8000")
