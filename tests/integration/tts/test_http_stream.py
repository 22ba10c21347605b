"""TTSManager.stream_static_text against the emulator over real HTTP: formats, chunking, errors, retries."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from voice.audio import FrameStream, sample_width
from voice.config import OUTPUT_FORMATS
from voice.emulators.elevenlabs import expected_frames, identify
from voice.emulators.redis_server import free_port
from voice.tts_manager import (
    TTSAuthError,
    TTSConnectionError,
    TTSFormatError,
    TTSManager,
    TTSQuotaError,
    TTSRateLimited,
    TTSServerError,
    TTSStreamError,
    TTSValidationError,
    TTSVoiceNotFoundError,
    WebSocketConnectionManager,
    shared_http_client,
)

TEXT = "Двенадцать тысяч пятьсот рублей."


def manager(config) -> TTSManager:
    return TTSManager(config, WebSocketConnectionManager(config))


async def collect(tts: TTSManager, text: str) -> list[bytes]:
    return [chunk async for chunk in tts.stream_static_text(text)]


def frames_of(output_format: str, chunks: list[bytes]) -> list[bytes]:
    stream = FrameStream(output_format)
    frames = [f for chunk in chunks for f in stream.feed(chunk)]
    return frames + stream.flush()


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
async def test_every_output_format_arrives_as_the_emulators_audio_for_the_text(emulator, tts_config, output_format):
    config = tts_config.model_copy(update=dict(output_format=output_format))
    chunks = await collect(manager(config), TEXT)
    frames = frames_of(output_format, chunks)
    assert frames == expected_frames(TEXT, output_format)
    assert identify(b"".join(frames)) == [TEXT]
    request = emulator.stats.requests[-1]
    assert request["query"] == {"output_format": output_format, "optimize_streaming_latency": "4"}
    assert request["body"]["model_id"] == "eleven_flash_v2_5"
    assert request["accept_encoding"] == "identity"


@pytest.mark.parametrize("output_format", ["pcm_16000", "pcm_22050", "ulaw_8000"])
async def test_odd_chunks_are_carried_to_whole_samples(emulator, tts_config, output_format):
    emulator.set_knobs(odd_chunks=True, chunk_bytes=37, realtime_factor=50.0)
    config = tts_config.model_copy(update=dict(output_format=output_format))
    chunks = await collect(manager(config), TEXT)
    assert len(chunks) > 5
    assert all(len(c) % sample_width(output_format) == 0 for c in chunks)
    assert frames_of(output_format, chunks) == expected_frames(TEXT, output_format)


async def test_stream_static_frames_yields_ready_8k_frames(emulator, tts_config):
    emulator.set_knobs(odd_chunks=True, chunk_bytes=301)
    frames = [f async for f in manager(tts_config).stream_static_frames("Hello")]
    assert frames == expected_frames("Hello", tts_config.output_format)


async def test_voice_settings_and_model_go_in_the_body(emulator, tts_config):
    config = tts_config.model_copy(update=dict(voice_settings={"stability": 0.4, "speed": 1.1},
                                               model_id="eleven_turbo_v2_5"))
    await collect(manager(config), "Hi")
    body = emulator.stats.requests[-1]["body"]
    assert body == {"text": "Hi", "model_id": "eleven_turbo_v2_5", "voice_settings": {"stability": 0.4, "speed": 1.1}}


@pytest.mark.parametrize(
    "change, knobs, error, status, code",
    [
        ({"api_key": SecretStr("wrong")}, {}, TTSAuthError, 401, "invalid_api_key"),
        ({}, {"character_quota": 3}, TTSQuotaError, 401, "quota_exceeded"),
        ({"voice_id": "no-such-voice"}, {}, TTSVoiceNotFoundError, 404, "voice_not_found"),
        ({"output_format": "pcm_44100"}, {"tier_gated_formats": ["pcm_44100"]}, TTSFormatError, 403, None),
        ({}, {"max_characters": 5}, TTSValidationError, 400, "max_character_limit_exceeded"),
        ({"voice_settings": {"speed": 3.0}}, {}, TTSValidationError, 422, "validation_error"),
    ],
)
async def test_client_errors_are_typed_and_never_retried(emulator, tts_config, change, knobs, error, status, code):
    emulator.set_knobs(**knobs)
    config = tts_config.model_copy(update=dict(max_retries=3, **change))
    with pytest.raises(error) as info:
        await collect(manager(config), TEXT)
    assert info.value.http_status == status
    if code:
        assert info.value.code == code
    assert info.value.request_id == emulator.stats.requests[-1]["request_id"]
    assert not info.value.retryable
    assert emulator.stats.http_requests == 1


async def test_a_format_that_cannot_be_converted_is_refused_before_any_request(emulator, tts_config):
    # TTSConfig's loader allows only supported formats; a config built around that check is still caught
    config = tts_config.model_copy(update=dict(output_format="mp3_44100_128"))
    with pytest.raises(TTSFormatError, match="mp3_44100_128"):
        await collect(manager(config), TEXT)
    assert emulator.stats.http_requests == 0


@pytest.mark.parametrize("status, error", [(429, TTSRateLimited), (500, TTSServerError), (503, TTSRateLimited)])
async def test_rate_limit_and_server_errors_are_retried_before_any_audio(emulator, tts_config, status, error):
    emulator.set_knobs(fail_status=status, fail_count=2)
    chunks = await collect(manager(tts_config.model_copy(update=dict(max_retries=2))), "Hello")
    assert frames_of(tts_config.output_format, chunks) == expected_frames("Hello", tts_config.output_format)
    assert emulator.stats.http_requests == 3
    assert emulator.stats.http_status[status] == 2


@pytest.mark.parametrize("status, error", [(429, TTSRateLimited), (502, TTSServerError)])
async def test_retries_give_up_after_max_retries(emulator, tts_config, status, error):
    emulator.set_knobs(fail_status=status)
    with pytest.raises(error) as info:
        await collect(manager(tts_config.model_copy(update=dict(max_retries=2))), "Hello")
    assert info.value.http_status == status
    assert emulator.stats.http_requests == 3


async def test_a_stream_cut_after_audio_was_yielded_is_a_stream_error_and_not_retried(emulator, tts_config):
    emulator.set_knobs(abort_after_bytes=5001, chunk_bytes=1000)
    received: list[bytes] = []
    with pytest.raises(TTSStreamError):
        async for chunk in manager(tts_config.model_copy(update=dict(max_retries=3))).stream_static_text(TEXT):
            received.append(chunk)
    assert sum(map(len, received)) == 5000  # everything before the cut, in whole samples
    assert emulator.stats.http_requests == 1


async def test_a_stream_cut_before_the_first_byte_is_retried(emulator, tts_config):
    emulator.set_knobs(abort_after_bytes=0)
    with pytest.raises(TTSConnectionError):
        await collect(manager(tts_config.model_copy(update=dict(max_retries=2))), TEXT)
    assert emulator.stats.http_requests == 3
    assert all(r.get("aborted_after") == 0 for r in emulator.stats.requests)


async def test_nothing_listening_is_a_connection_error(tts_config):
    config = tts_config.model_copy(update=dict(base_url=f"http://127.0.0.1:{free_port()}", max_retries=1))
    started = time.monotonic()
    with pytest.raises(TTSConnectionError) as info:
        await collect(manager(config), TEXT)
    assert info.value.retryable
    assert time.monotonic() - started < 5


async def test_no_first_byte_within_the_read_timeout_is_a_connection_error(emulator, tts_config):
    emulator.set_knobs(ttfb_ms=3000)
    config = tts_config.model_copy(update=dict(read_timeout_s=0.3, max_retries=0))
    started = time.monotonic()
    with pytest.raises(TTSConnectionError, match="ReadTimeout"):
        await collect(manager(config), TEXT)
    assert time.monotonic() - started < 2.5


async def test_empty_text_is_refused_without_a_request(emulator, tts_config):
    for text in ("", "   "):
        with pytest.raises(TTSValidationError, match="non-empty"):
            await collect(manager(tts_config), text)
    assert emulator.stats.http_requests == 0


async def test_one_http_client_for_all_calls_reusing_its_connection(emulator, tts_config):
    first, second = manager(tts_config), manager(tts_config)
    await collect(first, "One")
    await collect(second, "Two")
    await collect(first, "Three")
    peers = {r["peer"] for r in emulator.stats.requests}
    assert len(peers) == 1  # the same keep-alive connection carried all three calls' requests
    assert shared_http_client() is shared_http_client()


async def test_leaving_the_stream_early_ends_the_request_and_harms_nothing(emulator, tts_config):
    emulator.set_knobs(realtime_factor=5.0, chunk_bytes=640)
    tts = manager(tts_config)
    stream = tts.stream_static_text(TEXT)
    async for _chunk in stream:
        break
    await stream.aclose()
    for _ in range(100):  # the emulator notices the client went away
        if emulator.stats.concurrent == 0:
            break
        await asyncio.sleep(0.02)
    assert emulator.stats.concurrent == 0
    emulator.set_knobs(realtime_factor=0.0)
    assert frames_of(tts_config.output_format, await collect(tts, "Next")) == expected_frames("Next")


async def test_concurrent_calls_each_hear_their_own_text(emulator, tts_config):
    emulator.set_knobs(realtime_factor=20.0, odd_chunks=True, chunk_bytes=500)
    texts = [f"Call number {i}" for i in range(6)]
    results = await asyncio.gather(*(collect(manager(tts_config), t) for t in texts))
    for text, chunks in zip(texts, results, strict=True):
        assert identify(b"".join(frames_of(tts_config.output_format, chunks))) == [text]
    assert emulator.stats.max_concurrent_seen > 1
