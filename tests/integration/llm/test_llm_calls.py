"""End to end: caller -> AudioSocket server -> orchestrator -> fake LLM + TTS emulator (WebSocket) + Redis."""

from __future__ import annotations

import asyncio
import json
import uuid

from bridge.app import BridgeApp
from bridge.dialogue import parse_dialogue
from bridge.ops.metrics import Metrics
from bridge.server import AudioSocketServer
from support.llm import answer_requests, bare, heard, summary_requests, use_tts_format
from support.stack import frames_of, nonzero, wait_for
from voice.config import LLMConfig
from voice.emulators.elevenlabs import expected_frames

GREETING = """
start = "ask"
[vars]
name = "Иван"
[nodes.ask]
play = [ { llm = "Поздоровайся с {name}" } ]
hangup = true
"""

ZERO = bytes(320)

ANSWER = "Добрый день, ваш платёж принят. Спасибо за звонок."


async def test_the_caller_hears_the_answer_before_the_llm_has_finished_it(stack, fake_llm):
    fake_llm.set_knobs(answer=ANSWER, piece_delay_ms=250)  # 8 pieces: the last ~1.75 s after the first
    await stack.start(GREETING, filler_after_s=0)  # the first sound must be the answer itself
    report = await stack.call(duration_s=None)
    assert report.hangup == "server", report
    [entry] = fake_llm.stats.log
    assert entry["prompt"] == "Поздоровайся с Иван"
    assert entry["outcome"] == "done" and entry["pieces"] == 8
    # The request was sent after the UUID, so the first audio came at most first_audio_ms after it.
    first_audio_at_most = entry["received_at"] + report.first_audio_ms / 1000
    print(f"first audio {report.first_audio_ms:.0f} ms after the UUID; the LLM's last piece "
          f"{(entry['last_piece_at'] - entry['received_at']) * 1000:.0f} ms after its request")
    assert first_audio_at_most < entry["last_piece_at"] - 0.5
    assert heard(report.audio) == bare(ANSWER)
    assert stack.emulator.stats.http_requests == 0, "spoken over the WebSocket, not HTTP"
    assert stack.emulator.stats.ws_generations >= 3, "phrases went out one by one"


# the WebSocket is opened when the call starts -----------------------------------------------------------

HELLO_THEN_ASK = """
start = "hello"
[nodes.hello]
play = [ { static = "hello" } ]
next = "ask"
[nodes.ask]
play = [ { llm = "Спроси, чем помочь" } ]
hangup = true
"""

STATIC_ONLY = """
start = "hello"
[nodes.hello]
play = [ { static = "hello" } ]
hangup = true
"""


async def test_the_websocket_is_opened_when_the_call_starts_not_at_the_llm_node(stack, fake_llm):
    fake_llm.set_knobs(answer="Чем могу помочь?")
    await stack.start(HELLO_THEN_ASK)
    calling = asyncio.create_task(stack.call(duration_s=None))
    # while the greeting fragment (0.9 s) plays, before the llm node is reached, the socket is up
    assert await wait_for(lambda: stack.emulator.stats.ws_connections >= 1, timeout=3)
    assert fake_llm.stats.requests == 0, "the llm node must not have started yet"
    assert stack.emulator.stats.ws_open == 1
    report = await calling
    assert report.hangup == "server"
    hello = nonzero(await stack.fragment("hello"))
    frames = nonzero(frames_of(report.audio))
    assert frames[: len(hello)] == hello
    assert heard(b"".join(frames[len(hello):])) == bare("Чем могу помочь?")
    assert stack.emulator.stats.http_requests == 0
    assert await wait_for(lambda: stack.emulator.stats.ws_open == 0), "sockets left open after the hang-up"


async def test_a_dialogue_without_llm_items_opens_no_websocket(stack):
    await stack.start(STATIC_ONLY)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    assert stack.emulator.stats.ws_connections == 0


# a WebSocket failure mid-answer --------------------------------------------------------------------------

ASK = """
start = "ask"
[nodes.ask]
play = [ { llm = "Ответь" } ]
hangup = true
"""

CHAR_BYTES_8K = 960  # the TTS emulator speaks 60 ms per character: 960 bytes at pcm_8000


async def test_a_websocket_failure_mid_answer_is_retried_then_spoken_over_http(stack, fake_llm):
    answer = "Добрый день, ваш платёж принят. Спасибо."
    fake_llm.set_knobs(answer=answer)
    use_tts_format(stack, "pcm_8000")
    # every WebSocket fails with 1011 after three characters of its first phrase
    stack.emulator.set_knobs(chunk_bytes=CHAR_BYTES_8K, ws_error_code=1011, ws_error_after_bytes=3 * CHAR_BYTES_8K)
    await stack.start(ASK, filler_after_s=0)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    stats = stack.emulator.stats
    assert stats.ws_close_codes[1011] == 2, "a first attempt and one retry on a fresh WebSocket"
    assert stats.http_requests == 1, "then the HTTP fallback"
    # Each attempt was cut inside the first phrase, so none of it counts as heard: the retry and the
    # fallback start from that phrase again (said whole), and the caller hears the whole answer once.
    assert heard(report.audio) == "Доб" + "Доб" + bare(answer)
    assert stats.texts[answer] == 1, "the fallback spoke the whole answer in one synthesis"
    metrics = stack.runtime.metrics
    assert metrics.tts_requests.labels(api="ws")._value.get() == 2
    assert metrics.tts_requests.labels(api="http")._value.get() == 1
    assert metrics.tts_errors.labels(error="TTSServerError")._value.get() == 2


async def test_a_key_refused_at_the_websocket_upgrade_is_not_retried(stack, fake_llm):
    """Issue 12: HTTP 401 at the upgrade was retried on the WebSocket and then over HTTP; a refused key is
    refused again, so the caller hears the fallback phrase at once and no further request is made."""
    fake_llm.set_knobs(answer="Добрый день, ваш платёж принят.")
    stack.emulator.set_knobs(fail_status=401, fail_count=100)
    await stack.start(ASK, filler_after_s=0)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    stats = stack.emulator.stats
    assert stats.http_requests == 0, "no HTTP fallback with a key the service refuses"
    assert stats.ws_connections == 0
    upgrades = stats.http_status[401]
    assert upgrades <= 2, f"the call-start connect and the turn's own, never a retry: {upgrades}"
    assert stack.runtime.metrics.tts_errors.labels(error="TTSAuthError")._value.get() == 1


async def test_an_answer_is_resumed_after_the_phrases_already_heard(stack, fake_llm):
    """A turn that fails after whole phrases were spoken goes on from the next phrase: nothing is repeated.

    The TTS emulator closes a WebSocket that gets no text for 0.8 s (`input_timeout_exceeded`, 1008); the
    LLM sends a phrase every 1.2 s. So each socket speaks one phrase and then fails while waiting for
    the next: socket 1 speaks "Раз.", socket 2 (the retry) "Два.", and HTTP the rest.
    """
    fake_llm.set_knobs(answer="Раз. Два. Три.", piece_chars=5, piece_delay_ms=1200)  # "Раз. " "Два. " "Три."
    use_tts_format(stack, "pcm_8000")
    stack.emulator.set_knobs(ws_inactivity_timeout_s=0.8)
    await stack.start(ASK, filler_after_s=0)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    stats = stack.emulator.stats
    assert heard(report.audio) == bare("Раз. Два. Три.")
    assert stats.ws_close_codes[1008] >= 2
    assert stats.ws_generations == 2 and stats.http_requests == 1
    assert stats.texts == {"Раз.": 1, "Два.": 1, "Три.": 1}


# conversation memory and its cached summary ----------------------------------------------------------------

THREE_QUESTIONS = """
start = "one"
[nodes.one]
play = [ { llm = "Назови первое число" } ]
next = "two"
[nodes.two]
play = [ { llm = "Назови второе число" } ]
next = "three"
[nodes.three]
play = [ { llm = "Назови третье число" } ]
timeout_s = 0.6
next = "four"
[nodes.four]
play = [ { llm = "Попрощайся" } ]
hangup = true
"""

NUMBERS = {"Назови первое число": "Один.", "Назови второе число": "Два.", "Назови третье число": "Три.",
           "Попрощайся": "Пока."}


async def test_the_summary_is_computed_once_then_read_from_redis(stack, fake_llm):
    """Past LLM_MEMORY_CHARS the older turns are summarised (during the pause after node three); a call
    that comes back with the same UUID has the same conversation, and reads that summary from Redis."""
    fake_llm.set_knobs(answers=NUMBERS)
    llm = stack.settings.llm.model_copy(update={"llm_memory_chars": 60})
    stack.settings = stack.settings.model_copy(update={"llm": llm})
    await stack.start(THREE_QUESTIONS, filler_after_s=0)
    call_id = uuid.uuid4()

    first = await stack.call(duration_s=None, uuid=call_id)
    assert first.hangup == "server"
    assert heard(first.audio) == bare("Один.Два.Три.Пока.")
    [summary] = summary_requests(fake_llm)
    assert "Bot said: Один." in summary["prompt"] and "Bot said: Два." in summary["prompt"]
    keys = [key async for key in stack.redis.scan_iter("summary:*")]
    assert len(keys) == 1 and keys[0].decode().startswith(f"summary:{call_id}:")
    assert 0 < await stack.redis.ttl(keys[0]) <= stack.settings.llm.llm_summary_ttl_s
    text = (await stack.redis.get(keys[0])).decode()
    assert text == " ".join(summary["answer"].split())
    last = answer_requests(fake_llm)[-1]
    assert last["prompt"] == "Попрощайся"
    history = json.dumps(last["messages"], ensure_ascii=False)
    assert f"Summary of the call so far: {text}" in history
    assert "Один." not in history, "summarised turns are not sent again word for word"
    assert "Три." in history, "the latest exchange stays word for word"

    second = await stack.call(duration_s=None, uuid=call_id)
    assert heard(second.audio) == bare("Один.Два.Три.Пока.")
    assert len(summary_requests(fake_llm)) == 1, "the summary came from Redis, not from the LLM"
    again = answer_requests(fake_llm)[-1]
    assert f"Summary of the call so far: {text}" in json.dumps(again["messages"], ensure_ascii=False)


async def test_a_digit_that_cuts_an_answer_is_remembered_with_what_was_said(stack, fake_llm):
    dialogue = """
start = "offer"
[nodes.offer]
play = [ { llm = "Предложи тариф" } ]
barge_in = true
dtmf = { "1" = "confirm" }
timeout_s = 5
next = "confirm"
[nodes.confirm]
play = [ { llm = "Подтверди выбор" } ]
hangup = true
"""
    long_answer = "Наш лучший тариф стоит сто рублей в месяц, в него входят звонки, сообщения и интернет."
    fake_llm.set_knobs(answers={"Предложи тариф": long_answer, "Подтверди выбор": "Готово."})
    use_tts_format(stack, "pcm_8000")  # 3 frames per character: the cut part reads back exactly
    await stack.start(dialogue, filler_after_s=0)
    report = await stack.call(duration_s=None, dtmf=[(1.2, "1")])
    assert report.hangup == "server"
    frames = nonzero(frames_of(report.audio))
    done = nonzero(expected_frames("Готово.", "pcm_8000", stack.settings.cache.loudness_target))
    assert frames[-len(done):] == done
    cut = frames[: -len(done)]
    said = heard(b"".join(cut[: len(cut) // 3 * 3]))
    assert 0 < len(said) < len(bare(long_answer)) and bare(long_answer).startswith(said), "the answer was cut"
    confirm = answer_requests(fake_llm)[-1]
    messages = [(m["role"], m["content"]) for m in confirm["messages"]]
    assert [role for role, _ in messages] == ["system", "user", "assistant", "user"]
    assert messages[1][1] == "Предложи тариф"
    told = messages[2][1]
    assert told.endswith(" [the caller interrupted here]")
    assert long_answer.startswith(told.removesuffix(" [the caller interrupted here]"))
    # the digit and the next prompt, merged into one user message (strict chat templates alternate roles)
    assert messages[3][1] == "pressed 1 in the menu of 'offer'\n\nПодтверди выбор"


# hang-up, failures ----------------------------------------------------------------------------------------


async def test_hangup_mid_answer_closes_the_socket_and_leaves_no_task(stack, fake_llm):
    fake_llm.set_knobs(answer="Это длинный ответ, который модель пишет очень медленно, слово за словом.",
                       piece_delay_ms=300)
    await stack.start(ASK, filler_after_s=0)
    report = await stack.call(duration_s=1.2)
    assert report.hangup == "caller"
    assert report.first_audio_ms is not None, "the answer had started"
    assert await wait_for(lambda: stack.emulator.stats.ws_open == 0), "a TTS WebSocket outlived the call"
    assert await wait_for(lambda: fake_llm.stats.in_flight == 0), "the LLM request outlived the call"
    assert fake_llm.stats.log[0]["outcome"] == "client_gone"
    assert await wait_for(lambda: not stack.server.calls)
    await asyncio.sleep(0.2)
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("call:", "tts", "llm"))]
    assert left == []


async def test_an_llm_that_fails_before_any_text_plays_the_fallback_phrase(stack, fake_llm):
    fake_llm.set_knobs(fail_status=500)
    await stack.start(ASK, filler_after_s=0)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    assert nonzero(frames_of(report.audio)) == nonzero(await stack.fragment("fallback"))
    assert stack.emulator.stats.ws_generations == 0
    assert stack.runtime.metrics.errors.labels(where="llm")._value.get() == 1


async def test_an_llm_that_breaks_off_mid_answer_leaves_what_it_said(stack, fake_llm):
    fake_llm.set_knobs(answer="Ваш заказ отправлен. Он придёт завтра утром.", fail_after_pieces=4)
    await stack.start(ASK, filler_after_s=0)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    assert heard(report.audio) == bare("Ваш заказ отправлен. Он")
    assert fake_llm.stats.log[0]["outcome"] == "dropped"


# latency helpers: the request goes out ahead, a filler covers a slow LLM ------------------------------------


async def test_an_llm_item_after_a_fragment_is_asked_while_the_fragment_plays(stack, fake_llm):
    dialogue = """
start = "a"
[nodes.a]
play = [ { static = "hello" }, { llm = "Спроси имя" } ]
hangup = true
"""
    fake_llm.set_knobs(answer="Как вас зовут?", first_piece_delay_ms=600)
    await stack.start(dialogue, filler_after_s=0)
    report = await stack.call(duration_s=None)
    frames = frames_of(report.audio)
    hello = nonzero(await stack.fragment("hello"))
    sound = [(t, f) for t, f in zip(report.arrivals_ms, frames, strict=True) if f != ZERO]
    assert [f for _, f in sound[: len(hello)]] == hello
    gap_ms = sound[len(hello)][0] - sound[len(hello) - 1][0]
    print(f"silence between the fragment and the answer: {gap_ms:.0f} ms (the LLM takes 600 ms)")
    assert gap_ms < 400, "the LLM request should have gone out while the fragment played"
    assert heard(b"".join(f for _, f in sound[len(hello):])) == bare("Как вас зовут?")


async def test_a_slow_llm_gets_a_filler_first(stack, fake_llm):
    fake_llm.set_knobs(answer="Сейчас проверю.", first_piece_delay_ms=900)
    await stack.start(ASK, filler_after_s=0.2, filler_names=("filler_tak",))
    report = await stack.call(duration_s=None)
    heard_frames = nonzero(frames_of(report.audio))
    filler = nonzero(await stack.fragment("filler_tak"))
    assert heard_frames[: len(filler)] == filler
    assert heard(b"".join(heard_frames[len(filler):])) == bare("Сейчас проверю.")
    assert stack.runtime.metrics.fillers._value.get() == 1


async def test_a_second_llm_item_of_a_playlist_sees_the_first_answer(stack, fake_llm):
    dialogue = """
start = "a"
[nodes.a]
play = [ { llm = "Назови число" }, { llm = "Повтори его" } ]
hangup = true
"""
    fake_llm.set_knobs(answers={"Назови число": "Семь.", "Повтори его": "Ещё раз: семь."})
    await stack.start(dialogue, filler_after_s=0)
    report = await stack.call(duration_s=None)
    assert heard(report.audio) == bare("Семь.Ещё раз: семь.")
    first, second = fake_llm.stats.log
    assert second["received_at"] > first["last_piece_at"]
    assert {"role": "assistant", "content": "Семь."} in second["messages"]


# another LLM manager plugs in ------------------------------------------------------------------------------


class EchoSource:
    """A different `TextSource`: a plain async iterator (no `aclose`), no HTTP, no LLM settings needed."""

    def __init__(self) -> None:
        self.prompts: list[tuple[str, list]] = []

    def stream(self, prompt, history):
        self.prompts.append((prompt, list(history)))
        return _Words(f"Вы сказали: {prompt}.")


class _Words:
    def __init__(self, text: str) -> None:
        self.words = iter(text.split())

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        await asyncio.sleep(0.01)
        try:
            return next(self.words) + " "
        except StopIteration:
            raise StopAsyncIteration from None


async def test_any_text_source_plugs_in(stack):
    source = EchoSource()
    settings = stack.settings.model_copy(update=dict(llm=LLMConfig()))  # no LLM_BASE_URL: the source is given
    stack.runtime = BridgeApp(settings, dialogue=parse_dialogue(GREETING), cache=stack.cache,
                                  metrics=Metrics(), llm=source)
    await stack.runtime.start()
    stack.server = AudioSocketServer(settings.bridge, stack.runtime.handle)
    await stack.server.start()
    report = await stack.call(duration_s=None)
    assert heard(report.audio) == bare("Вы сказали: Поздоровайся с Иван.")
    assert source.prompts == [("Поздоровайся с Иван", [])]
