"""Both recognizers against the emulator over real WebSocket/HTTP: the caller's tone-coded words come back
as transcripts, failures as typed errors, and close() leaves nothing running."""

from __future__ import annotations

import asyncio
import audioop

import pytest
from pydantic import SecretStr

from support.speech import spoken
from voice.config import TTSConfig
from voice.http import aclose_shared_client
from voice.stt import STTConfig, create_recognizer
from voice.stt.errors import (
    STTAuthError,
    STTNotConfigured,
    STTRateLimited,
    STTServerError,
    STTStreamError,
)
from voice.stt.events import (
    BargeInDetected,
    FinalTranscript,
    PartialTranscript,
    SpeechStarted,
    UtteranceEnded,
)
from voice.stt.openai import OpenAITranscriber
from voice.stt.scribe import ScribeRealtimeRecognizer


def configs(emulators, provider: str, **stt):
    tts = TTSConfig(api_key=emulators.key, base_url=emulators.url)
    return STTConfig(stt_provider=provider, stt_openai_base_url=f"{emulators.url}/v1", stt_openai_api_key=emulators.key,
                     **{f"stt_{k}": v for k, v in stt.items()}), tts


async def collect(recognizer, frames, *, finals: int = 1, timeout: float = 5.0):
    """Feed frames at once (the recognizer never waits on them), then read events until `finals` finals."""
    events = []

    async def read():
        async for event in recognizer.events():
            events.append(event)
            if sum(isinstance(e, FinalTranscript) for e in events) >= finals:
                return

    reader = asyncio.create_task(read())
    for frame in frames:
        recognizer.feed(frame)
        await asyncio.sleep(0)
    await asyncio.wait_for(reader, timeout)
    return events


def ours(before: set[asyncio.Task]) -> set[asyncio.Task]:
    """The recognizer's tasks still running (the emulator's server tasks share the loop: not ours)."""
    return {t for t in asyncio.all_tasks() - before if t.get_name().startswith("stt-") and not t.done()}


async def closed_on_server(emulators, within_s: float = 3.0) -> bool:
    """The emulator saw every WebSocket end (its bookkeeping trails the client's abort a little)."""
    for _ in range(int(within_s / 0.02)):
        if emulators.stt.stats.ws_open == 0:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.fixture(autouse=True)
async def _close_client():
    yield
    await aclose_shared_client()


@pytest.mark.parametrize("provider", ["elevenlabs", "openai"])
async def test_the_caller_is_heard_word_for_word(emulators, provider):
    stt, tts = configs(emulators, provider, language="ru")
    recognizer = create_recognizer(stt, tts, "pcm_8000")
    await recognizer.start()
    try:
        events = await collect(recognizer, spoken("да, конечно") + spoken("нет"), finals=2)
    finally:
        await recognizer.close()
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert [(f.utterance, f.text) for f in finals] == [(1, "да, конечно"), (2, "нет")]
    order = [type(e).__name__ for e in events if not isinstance(e, PartialTranscript)]
    assert order[:3] == ["SpeechStarted", "BargeInDetected", "UtteranceEnded"]
    if provider == "elevenlabs":
        assert any(isinstance(e, PartialTranscript) and e.text == "да, конечно" for e in events)
        assert emulators.stt.stats.commits == 2
        assert emulators.stt.stats.ws_queries[-1]["query"]["language_code"] == "ru"
    else:
        assert emulators.stt.stats.http_requests_log[-1] == {"model": "whisper-1", "response_format": "json",
                                                            "language": "ru"}


@pytest.mark.parametrize("fmt", ["ulaw_8000", "pcm_16000"])
async def test_scribe_gets_the_calls_format_unchanged(emulators, fmt):
    stt, tts = configs(emulators, "elevenlabs")
    frames = spoken("да, конечно")
    if fmt == "ulaw_8000":
        frames = [audioop.lin2ulaw(f, 2) for f in frames]
    else:
        frames = [audioop.ratecv(f, 2, 1, 8000, 16000, None)[0] for f in frames]
        frames = [f.ljust(640, b"\x00")[:640] for f in frames]
    async with ScribeRealtimeRecognizer(
        stt, api_key=tts.api_key.get_secret_value(), base_url=tts.base_url, audio_format=fmt
    ) as rec:
        events = await collect(rec, frames)
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == ["да, конечно"]
    assert emulators.stt.stats.ws_queries[-1]["query"]["audio_format"] == fmt
    expected = 160 if fmt == "ulaw_8000" else 640
    sent = emulators.stt.stats.audio_bytes  # whole frames, as delivered, up to the final transcript
    assert sent % expected == 0 and sent >= expected * (10 + 33 + 30)


async def test_scribe_server_vad_commits_without_our_commit(emulators):
    stt, tts = configs(emulators, "elevenlabs", commit="vad", end_silence_ms=400)
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        events = await collect(rec, spoken("да", tail_s=1.0))
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == ["да"]
    assert emulators.stt.stats.ws_queries[-1]["query"]["commit_strategy"] == "vad"
    assert emulators.stt.stats.ws_queries[-1]["query"]["vad_silence_threshold_secs"] == "0.4"


async def test_a_commit_from_the_dialogue_ends_the_utterance_early(emulators):
    stt, tts = configs(emulators, "elevenlabs")
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        frames = spoken("да", tail_s=0.1)  # no endpointing silence yet
        for frame in frames:
            rec.feed(frame)
        rec.commit()
        events = await collect(rec, [])
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert ended and ended[0].reason == "commit"
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == ["да"]


async def test_line_noise_and_silence_send_no_commit(emulators):
    stt, tts = configs(emulators, "elevenlabs")
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        for _ in range(100):
            rec.feed(b"\x00" * 320)
        await asyncio.sleep(0.2)
    assert emulators.stt.stats.commits == 0 and emulators.stt.stats.audio_chunks == 20


async def test_wrong_key_is_an_auth_error_at_start(emulators):
    stt, tts = configs(emulators, "elevenlabs")
    rec = create_recognizer(stt, tts.model_copy(update={"api_key": SecretStr("wrong")}))
    with pytest.raises(STTAuthError):
        await rec.start()
    await rec.close()
    assert await closed_on_server(emulators)


async def test_a_busy_service_is_retried_once_then_reported(emulators):
    stt, tts = configs(emulators, "elevenlabs", max_retries=1)
    emulators.stt.set_knobs(fail_status=503, fail_count=1)
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        assert isinstance(rec, ScribeRealtimeRecognizer) and rec.session_id
    emulators.stt.set_knobs(fail_status=429, fail_count=2)
    rec = create_recognizer(stt, tts)
    with pytest.raises(STTRateLimited):
        await rec.start()
    await rec.close()


async def test_a_transcriber_error_mid_call_is_raised_by_the_events(emulators):
    stt, tts = configs(emulators, "elevenlabs")
    emulators.stt.set_knobs(ws_error="transcriber_error")
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        with pytest.raises(STTServerError) as info:
            await collect(rec, spoken("да"))
        assert info.value.code == "transcriber_error"
        rec.feed(b"\x00" * 320)  # ignored after the failure, no exception


async def test_a_throttled_commit_that_ends_the_session_is_reported_as_rate_limiting(emulators):
    stt, tts = configs(emulators, "elevenlabs")
    emulators.stt.set_knobs(ws_error="commit_throttled")
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        with pytest.raises(STTRateLimited) as info:
            await collect(rec, spoken("да"))
        assert info.value.code == "commit_throttled"


async def test_a_dropped_connection_is_a_stream_error(emulators):
    stt, tts = configs(emulators, "elevenlabs")
    emulators.stt.set_knobs(drop_after_chunks=2)
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        with pytest.raises(STTStreamError):
            await collect(rec, spoken("да, конечно"))


async def test_openai_retries_a_5xx_and_reports_a_4xx(emulators):
    stt, tts = configs(emulators, "openai", max_retries=1)
    emulators.stt.set_knobs(fail_status=503, fail_count=1)
    async with create_recognizer(stt, tts) as rec:  # type: ignore[attr-defined]
        events = await collect(rec, spoken("нет"))
    assert [e.text for e in events if isinstance(e, FinalTranscript)] == ["нет"]
    assert emulators.stt.stats.http_status == {503: 1, 200: 1}
    bad = stt.model_copy(update={"stt_openai_api_key": SecretStr("wrong")})
    async with OpenAITranscriber(bad) as rec:
        with pytest.raises(STTAuthError):
            await collect(rec, spoken("нет"))


async def test_close_while_listening_leaves_nothing_running(emulators):
    before = {t for t in asyncio.all_tasks()}
    stt, tts = configs(emulators, "elevenlabs")
    emulators.stt.set_knobs(final_delay_ms=2000)
    rec = create_recognizer(stt, tts)
    await rec.start()
    for frame in spoken("да"):
        rec.feed(frame)
    await asyncio.sleep(0.1)
    await rec.close()
    events = [e async for e in rec.events()]  # the iterator ends after close
    assert not any(isinstance(e, FinalTranscript) for e in events)
    assert ours(before) == set()
    assert await closed_on_server(emulators)


async def test_openai_close_cancels_a_request_in_flight(emulators):
    before = {t for t in asyncio.all_tasks()}
    stt, tts = configs(emulators, "openai")
    emulators.stt.set_knobs(final_delay_ms=5000)
    rec = create_recognizer(stt, tts)
    await rec.start()
    for frame in spoken("да"):
        rec.feed(frame)
    await asyncio.sleep(0.1)
    await rec.close()
    assert ours(before) == set()


def test_none_is_not_a_recognizer():
    with pytest.raises(STTNotConfigured):
        create_recognizer(STTConfig(), TTSConfig())


def test_events_are_typed():
    assert SpeechStarted(1, 5) != BargeInDetected(1, 5)
