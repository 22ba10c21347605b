"""`OpenAICompatibleSource` over real HTTP: the fake endpoint, and small servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from support.llm import llm_config
from voice.config import ConfigError, LLMConfig
from voice.emulators.llm import split_pieces
from voice.llm import ChatMessage, LLMError, OpenAICompatibleSource, TextSource
from voice.tts_manager import aclose_shared_client


@pytest.fixture(autouse=True)
async def _close_client():
    yield
    await aclose_shared_client()


async def collect(source: TextSource, prompt: str = "hi", history=()) -> list[str]:
    return [piece async for piece in source.stream(prompt, list(history))]


async def test_pieces_arrive_in_order_with_the_request_openai_expects(fake_llm):
    answer = "Здравствуйте, чем могу помочь?"
    fake_llm.set_knobs(answer=answer)
    source = OpenAICompatibleSource(llm_config(fake_llm, llm_max_tokens=50))
    assert isinstance(source, TextSource)
    history = [ChatMessage("system", "Summary: none yet"), ChatMessage("user", "Скажи привет"),
               ChatMessage("assistant", "Привет."), ChatMessage("user", "pressed 1")]
    pieces = await collect(source, "Спроси, чем помочь", history)
    assert pieces == split_pieces(answer)
    [entry] = fake_llm.stats.log
    assert entry["model"] == "test-model" and entry["stream"] is True
    assert [m["role"] for m in entry["messages"]] == ["system", "user", "assistant", "user"]
    assert entry["messages"][0]["content"].startswith("You are the voice")
    assert entry["messages"][0]["content"].endswith("Summary: none yet")  # system messages merged
    assert entry["messages"][-1]["content"] == "pressed 1\n\nСпроси, чем помочь"


async def test_the_first_piece_comes_before_the_answer_is_finished(fake_llm):
    fake_llm.set_knobs(answer="раз два три четыре", piece_delay_ms=200)
    source = OpenAICompatibleSource(llm_config(fake_llm))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with contextlib.aclosing(source.stream("x", [])) as stream:
        first = await anext(stream)
        first_s = loop.time() - started
        rest = [p async for p in stream]
    assert first == "раз" and rest == [" два", " три", " четыре"]
    assert first_s < 0.4 < loop.time() - started


async def test_a_wrong_key_is_an_llm_error_with_its_status(fake_llm):
    source = OpenAICompatibleSource(LLMConfig(llm_base_url=fake_llm.url, llm_api_key="wrong"))
    with pytest.raises(LLMError) as caught:
        await collect(source)
    assert caught.value.status == 401
    assert "HTTP 401" in str(caught.value) and "Incorrect API key" in str(caught.value)
    assert "LLM_API_KEY" in str(caught.value)


async def test_a_server_error_is_an_llm_error(fake_llm):
    fake_llm.set_knobs(fail_status=503, fail_count=1)
    source = OpenAICompatibleSource(llm_config(fake_llm))
    with pytest.raises(LLMError) as caught:
        await collect(source)
    assert caught.value.status == 503
    assert await collect(source) == split_pieces(fake_llm.answer_for("hi"))  # the next request is served


async def test_an_answer_dropped_mid_stream_raises_after_the_pieces_it_gave(fake_llm):
    fake_llm.set_knobs(answer="один два три четыре", fail_after_pieces=2)
    source = OpenAICompatibleSource(llm_config(fake_llm))
    got: list[str] = []
    with pytest.raises(LLMError) as caught:
        async for piece in source.stream("x", []):
            got.append(piece)
    assert got == ["один", " два"]
    assert caught.value.pieces == 2 and "broke off" in str(caught.value)


async def test_closing_the_stream_ends_the_request(fake_llm):
    fake_llm.set_knobs(answer="раз два три четыре пять", piece_delay_ms=300)
    source = OpenAICompatibleSource(llm_config(fake_llm))
    stream = source.stream("x", [])
    assert await anext(stream) == "раз"
    await stream.aclose()
    for _ in range(100):
        if fake_llm.stats.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert fake_llm.stats.in_flight == 0 and fake_llm.stats.client_gone == 1


async def test_nothing_listening_is_an_llm_error(unused_port):
    source = OpenAICompatibleSource(LLMConfig(llm_base_url=f"http://127.0.0.1:{unused_port}/v1"))
    with pytest.raises(LLMError) as caught:
        await collect(source)
    assert "no answer from the LLM" in str(caught.value) and caught.value.pieces == 0


async def test_a_slow_first_piece_hits_the_read_timeout(fake_llm):
    fake_llm.set_knobs(first_piece_delay_ms=1500)
    source = OpenAICompatibleSource(llm_config(fake_llm, llm_read_timeout_s=0.3))
    with pytest.raises(LLMError) as caught:
        await collect(source)
    assert "ReadTimeout" in str(caught.value)


def test_the_client_needs_an_endpoint():
    with pytest.raises(ConfigError) as caught:
        OpenAICompatibleSource(LLMConfig())
    assert caught.value.setting == "LLM_BASE_URL"


# servers that answer strangely --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(handler):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield OpenAICompatibleSource(LLMConfig(llm_base_url=f"http://127.0.0.1:{port}/v1"))
    finally:
        await runner.cleanup()


def sse_handler(*events: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event.encode())
        await response.write_eof()
        return response
    return handler


def chunk(content: str | None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"


async def test_a_server_that_ignores_stream_true_is_read_whole():
    async def handler(request):
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Целиком."}}]})
    async with serving(handler) as source:
        assert await collect(source) == ["Целиком."]


async def test_comments_multiline_data_and_usage_chunks_are_understood():
    multiline = 'data: {"choices": [{"index": 0,\ndata: "delta": {"content": ", три"}}]}\n\n'
    events = [": keep-alive comment\n\n", "event: message\nid: 1\n" + chunk("Раз"), chunk(", два"), multiline,
              'data: {"choices": [], "usage": {"total_tokens": 3}}\n\n', chunk(None, "stop")]
    async with serving(sse_handler(*events)) as source:
        assert await collect(source) == ["Раз", ", два", ", три"]


async def test_an_event_that_is_not_json_is_an_llm_error():
    async with serving(sse_handler(chunk("Раз"), "data: {not json\n\n")) as source:
        with pytest.raises(LLMError) as caught:
            await collect(source)
    assert "not JSON" in str(caught.value) and caught.value.pieces == 1


async def test_an_error_event_mid_answer_is_an_llm_error():
    error = 'data: {"error": {"message": "model overloaded", "type": "server_error"}}\n\n'
    async with serving(sse_handler(chunk("Раз"), error)) as source:
        with pytest.raises(LLMError) as caught:
            await collect(source)
    assert "model overloaded" in str(caught.value)


async def test_a_stream_that_ends_without_done_or_finish_reason_is_cut_short():
    async with serving(sse_handler(chunk("Раз"), chunk(" два"))) as source:
        with pytest.raises(LLMError) as caught:
            await collect(source)
    assert "cut short" in str(caught.value) and caught.value.pieces == 2


async def test_a_non_string_content_is_an_llm_error():
    bad = 'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n'
    async with serving(sse_handler(bad)) as source:
        with pytest.raises(LLMError) as caught:
            await collect(source)
    assert "delta.content" in str(caught.value)


async def test_an_html_error_page_is_reported_with_its_status():
    async def handler(request):
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
    async with serving(handler) as source:
        with pytest.raises(LLMError) as caught:
            await collect(source)
    assert caught.value.status == 502 and "Bad Gateway" in str(caught.value)
