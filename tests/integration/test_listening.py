"""Listening nodes end to end, on real parts: the simulated caller speaking tone-coded text over a real
AudioSocket TCP leg, the bridge in this process, the ElevenLabs emulator with its Scribe realtime STT mounted
(same URL and key), the fake LLM, and a private Redis. What the caller hears is read back from the TTS
emulator's tone code, so each test asserts where the dialogue went by what was said to the caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.config import BridgeConfig, Settings
from support.stack import FRAGMENTS, Stack, wait_for
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, LLMConfig, TTSConfig
from voice.emulators.elevenlabs import (
    DEFAULT_API_KEY,
    DEFAULT_VOICES,
    Emulator,
    identify,
)
from voice.emulators.llm import LLMEmulator
from voice.emulators.stt import STTEmulator, mount_stt
from voice.keys import static_key
from voice.stt import STTConfig
from voice.tts_manager import aclose_shared_client

LLM_KEY = "llm-test-key"


class ListeningStack(Stack):
    stt: STTEmulator
    llm: LLMEmulator


@contextlib.asynccontextmanager
async def listening_stack(redis_url: str, **stt: object) -> AsyncIterator[ListeningStack]:
    await RedisCacheManager.reset_instance()
    cache = RedisCacheManager(CacheConfig(redis_url=redis_url, breaker_cooloff_s=0.5))
    await cache.connect()
    for wav in sorted(FRAGMENTS.glob("*.wav")):
        await cache.load_and_set_audio(static_key(wav.stem), str(wav))
    emulator = Emulator()
    stt_emulator = mount_stt(emulator)
    await emulator.start()
    llm = await LLMEmulator(api_key=LLM_KEY).start()
    settings = Settings(
        bridge=BridgeConfig(port=0, grace_s=0, filler_after_s=0),
        cache=cache.config,
        tts=TTSConfig(api_key=DEFAULT_API_KEY, base_url=emulator.url, voice_id=DEFAULT_VOICES[0],
                      output_format="pcm_8000", retry_backoff_s=0.01, connect_timeout_s=2.0, read_timeout_s=5.0),
        llm=LLMConfig(llm_base_url=llm.url, llm_api_key=LLM_KEY, llm_model="test-model", llm_read_timeout_s=5.0),
        stt=STTConfig(**{"stt_provider": "elevenlabs", "stt_end_silence_ms": 400, "stt_request_timeout_s": 3.0,
                         "stt_max_retries": 0, **stt}),
    )
    client = aioredis.Redis.from_url(redis_url)
    s = ListeningStack(settings=settings, cache=cache, emulator=emulator, redis=client)
    s.stt, s.llm = stt_emulator, llm
    try:
        yield s
    finally:
        await s.stop_bridge()
        await llm.stop()
        await emulator.stop()
        await client.aclose()
        await aclose_shared_client()
        await RedisCacheManager.reset_instance()


@pytest.fixture
async def stack(redis_url):
    async with listening_stack(redis_url) as s:
        yield s


def heard(audio: bytes) -> list[str]:
    """The phrases the caller heard (each TTS phrase is one run of sound)."""
    return identify(audio)


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


ASK = """
start = "ask"
[nodes.ask]
play = [ { tts = "Да или нет?" } ]
listen = { into = "reply", timeout_s = 1.5 }
routes = { "да|yes|конечно" = "confirm", "нет|no" = "decline" }
dtmf = { "1" = "confirm", "2" = "decline" }
no_input = "silent"
no_match = "unclear"
[nodes.confirm]
play = [ { tts = "Подтверждено: {reply}" } ]
hangup = true
[nodes.decline]
play = [ { tts = "Отменено" } ]
hangup = true
[nodes.silent]
play = [ { tts = "Вас не слышно" } ]
hangup = true
[nodes.unclear]
play = [ { tts = "Не понял: {reply}" } ]
hangup = true
"""


async def test_a_spoken_answer_picks_its_route_and_is_a_call_variable(stack):
    await stack.start(ASK)
    with capture_logs() as logs:
        placed = asyncio.ensure_future(stack.call(duration_s=None, say=[(1.2, "Да, конечно")]))
        assert await wait_for(lambda: stack.server.calls, timeout=5)
        [call] = stack.server.calls
        report = await placed
    assert report.hangup == "server", report
    assert heard(report.audio) == ["Да или нет?", "Подтверждено: Да, конечно"]
    assert not call._tick_reads_allowed  # a listening call is read as audio arrives, not on its tick
    [transcript] = events(logs, "transcript")
    assert transcript["text"] == "Да, конечно" and transcript["utterance"] == 1
    [choice] = events(logs, "spoken_choice")
    assert (choice["outcome"], choice["target"], choice["pattern"]) == ("route", "confirm", "да|yes|конечно")
    metrics = stack.runtime.metrics
    assert metrics.stt_final._sum.get() > 0 and metrics.turn_latency._sum.get() > 0
    assert stack.stt.stats.transcripts[-1] == "Да, конечно"


async def test_nothing_said_goes_no_input(stack):
    await stack.start(ASK)
    report = await stack.call(duration_s=None)
    assert heard(report.audio) == ["Да или нет?", "Вас не слышно"]


async def test_words_no_route_knows_go_no_match(stack):
    await stack.start(ASK)
    report = await stack.call(duration_s=None, say=[(1.2, "может быть")])
    assert heard(report.audio) == ["Да или нет?", "Не понял: может быть"]


async def test_a_digit_is_taken_while_listening(stack):
    await stack.start(ASK)
    with capture_logs() as logs:
        report = await stack.call(duration_s=None, dtmf=[(1.3, "5"), (1.6, "2")])
    assert heard(report.audio) == ["Да или нет?", "Отменено"]
    assert [e["digit"] for e in events(logs, "dtmf_ignored")] == ["5"]


async def test_stt_down_the_call_goes_on_with_digits(stack):
    stack.stt.set_knobs(fail_status=503)
    await stack.start(ASK)
    with capture_logs() as logs:
        report = await stack.call(duration_s=None, dtmf=[(1.4, "1")], say=[(1.2, "нет")])
    assert report.hangup == "server"
    # the spoken "нет" was not heard (no recognizer), the digit was: the dialogue went on by DTMF, and
    # {reply} is empty (nothing was heard)
    assert heard(report.audio) == ["Да или нет?", "Подтверждено:"]
    [failed] = [e for e in events(logs, "stt_failed") if "stage" in e]
    assert failed["stage"] == "start" and failed["error_type"] == "STTServerError"
    assert stack.runtime.metrics.stt_errors.labels(error="STTServerError")._value.get() == 1
    report = await stack.call(duration_s=None)  # no digit either: no_input, the call still ends normally
    assert heard(report.audio) == ["Да или нет?", "Вас не слышно"]


async def test_stt_slow_is_a_timeout_not_a_hang(stack):
    stack.stt.set_knobs(final_delay_ms=4000)
    stack.settings = stack.settings.model_copy(
        update={"stt": stack.settings.stt.model_copy(update={"stt_request_timeout_s": 0.5})})
    await stack.start(ASK)
    with capture_logs() as logs:
        report = await stack.call(duration_s=None, say=[(1.2, "да")])
    assert heard(report.audio) == ["Да или нет?", "Вас не слышно"]
    [timeout] = events(logs, "stt_timeout")
    assert timeout["waited_s"] == 0.5
    assert stack.runtime.metrics.stt_errors.labels(error="timeout")._value.get() == 1


async def test_hang_up_while_listening_leaves_nothing_running(stack):
    await stack.start(ASK.replace("timeout_s = 1.5", "timeout_s = 30"))
    report = await stack.call(duration_s=1.6, say=[(1.2, "да")])  # hangs up mid-utterance
    assert report.hangup == "caller"
    assert await wait_for(lambda: not stack.server.calls and stack.stt.stats.ws_open == 0, timeout=5)
    await asyncio.sleep(0.1)
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("call:", "stt"))]
    assert left == []
    assert stack.stt.stats.ws_connections == 1


BARGE = """
start = "hello"
[nodes.hello]
play = [ { tts = "Слушаю" } ]
listen = { into = "reply", timeout_s = 3 }
next = "chat"
no_input = "bye"
[nodes.chat]
play = [ { llm = "{reply}" } ]
barge_in = true
listen = { into = "reply", timeout_s = 2 }
routes = { "стоп" = "stopped" }
next = "chat"
no_input = "bye"
[nodes.stopped]
play = [ { tts = "Остановлено: {reply}" } ]
hangup = true
[nodes.bye]
play = [ { tts = "Пока" } ]
hangup = true
"""

LONG_ANSWER = "Это очень длинный ответ, который говорится медленно, фраза за фразой, и не кончается ещё долго."


async def test_speech_barges_into_an_answer_and_is_heard(stack):
    stack.llm.set_knobs(answer=LONG_ANSWER)
    await stack.start(BARGE)
    inbound = []
    new_runner = stack.runtime.new_runner

    def runner(call, *args, **kw):
        made = new_runner(call, *args, **kw)
        inbound.append(call.on_audio)
        return made

    stack.runtime.new_runner = runner
    with capture_logs() as logs:
        # "вопрос" ends about 1.5 s in; the answer starts about 0.5 s later and lasts several seconds
        report = await stack.call(duration_s=None, say=[(1.0, "вопрос"), (3.0, "стоп, подождите")])
    said = heard(report.audio)
    assert said[0] == "Слушаю" and said[-1] == "Остановлено: стоп, подождите", said
    spoken_answer = "".join(said[1:-1]).replace(" ", "")
    assert spoken_answer and spoken_answer != LONG_ANSWER.replace(" ", ""), "the answer must have been cut"
    [barge] = events(logs, "barge_in")
    assert barge["by"] == "speech"
    [entry] = stack.llm.stats.log
    assert entry["prompt"] == "вопрос"
    # one VAD pass a frame: the call's inbound audio is classified by the barge-in detector's VAD, and the
    # recognizer is handed that decision
    [audio] = inbound
    detector, listener = (sink.__self__ for sink in audio.sinks)
    assert audio.vad is detector.vad and listener.recognizer is not None


async def test_a_blip_does_not_stop_the_answer(stack):
    stack.llm.set_knobs(answer="Ответ целиком")
    await stack.start(BARGE)
    with capture_logs() as logs:
        report = await stack.call(duration_s=None, say=[(1.0, "вопрос"), (2.3, "а")])
    assert "barge_in" not in [e["event"] for e in logs]
    said = heard(report.audio)
    assert said[0] == "Слушаю" and "".join(said[1:]).replace(" ", "").startswith("Ответцеликом"), said


CHAT = """
start = "hello"
[nodes.hello]
play = [ { tts = "Слушаю" } ]
listen = { into = "reply", timeout_s = 3 }
next = "chat"
no_input = "bye"
[nodes.chat]
play = [ { llm = "{reply}" } ]
listen = { into = "reply", timeout_s = 1.5 }
next = "chat"
no_input = "bye"
[nodes.bye]
play = [ { tts = "Пока" } ]
hangup = true
"""


async def test_a_spoken_llm_loop_remembers_the_conversation_and_caches_its_summary(stack):
    stack.settings = stack.settings.model_copy(
        update={"llm": stack.settings.llm.model_copy(update={"llm_memory_chars": 50})})
    stack.llm.set_knobs(answers={"первый": "Один ответ на первый вопрос", "второй": "Два ответа на второй вопрос"})
    await stack.start(CHAT)
    report = await stack.call(duration_s=None, say=[(1.0, "первый"), (4.5, "второй")], max_wait_s=20)
    assert report.hangup == "server", report
    said = heard(report.audio)
    assert [p.replace(" ", "") for p in said] == ["Слушаю", "Одинответнапервыйвопрос", "Дваответанавторойвопрос",
                                                  "Пока"], said
    answers = [e for e in stack.llm.stats.log if e["prompt"] in ("первый", "второй")]
    assert [e["prompt"] for e in answers] == ["первый", "второй"]
    second = [m["content"] for m in answers[1]["messages"]]
    assert "первый" in " ".join(second) and "Один" in " ".join(second), second  # memory of the first turn
    summaries = [e for e in stack.llm.stats.log if e not in answers]
    assert summaries, "a conversation past llm_memory_chars is summarised"
    assert await wait_for(lambda: _summary_keys(stack), timeout=3), "the summary is cached in Redis"


async def _summary_keys(stack: ListeningStack) -> list[bytes]:
    return [key async for key in stack.redis.scan_iter("summary:*")]


async def test_stt_failing_mid_call_the_dialogue_falls_back_to_digits(stack):
    stack.stt.set_knobs(ws_error="transcriber_error")  # the first commit gets an error, then the session closes
    await stack.start(ASK.replace("timeout_s = 1.5", "timeout_s = 4"))
    with capture_logs() as logs:
        report = await stack.call(duration_s=None, say=[(1.0, "да")], dtmf=[(2.6, "2")])
    assert report.hangup == "server"
    assert heard(report.audio) == ["Да или нет?", "Отменено"]
    names = [e["event"] for e in logs]
    assert "listening_without_stt" in names and "transcript" not in names
    assert stack.runtime.metrics.stt_errors.labels(error="STTServerError")._value.get() == 1


async def test_the_openai_compatible_recognizer_routes_the_same_way(stack):
    stt = stack.settings.stt.model_copy(update={"stt_provider": "openai",
                                                "stt_openai_base_url": f"{stack.emulator.url}/v1",
                                                "stt_openai_api_key": SecretStr(DEFAULT_API_KEY)})
    stack.settings = stack.settings.model_copy(update={"stt": stt})
    await stack.start(ASK)
    report = await stack.call(duration_s=None, say=[(1.2, "Нет")])
    assert heard(report.audio) == ["Да или нет?", "Отменено"]
    assert stack.stt.stats.http_requests == 1 and stack.stt.stats.ws_connections == 0
