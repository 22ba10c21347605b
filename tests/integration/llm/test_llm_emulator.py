"""The fake OpenAI-compatible endpoint itself: protocol, validation, knobs, control endpoints, CLI."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest

from support.llm import LLM_KEY
from voice.emulators.llm import LLMEmulator, LLMKnobs, echo_answer, split_pieces

AUTH = {"Authorization": f"Bearer {LLM_KEY}"}
BODY = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Привет"}]}


def test_pieces_look_like_openai_tokens_and_join_back():
    assert split_pieces("Hello, how are you?") == ["Hello,", " how", " are", " you?"]
    assert split_pieces("a b  ") == ["a", " b  "]
    assert split_pieces("abcdefg", 3) == ["abc", "def", "g"]
    text = "  Здравствуйте,\nчем могу   помочь? "
    assert "".join(split_pieces(text)) == text


async def test_a_streamed_answer_is_openai_server_sent_events(fake_llm):
    fake_llm.set_knobs(answer="Добрый день.")
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake_llm.url}/chat/completions", json={**BODY, "stream": True}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Добрый день."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    [entry] = fake_llm.stats.log
    assert entry["prompt"] == "Привет" and entry["outcome"] == "done" and entry["pieces"] == 2
    assert entry["first_piece_at"] <= entry["last_piece_at"] and len(entry["piece_at"]) == 2


async def test_without_stream_the_answer_is_one_completion(fake_llm):
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake_llm.url}/chat/completions", json=BODY, headers=AUTH)
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": echo_answer("Привет")}


@pytest.mark.parametrize("body, status, words", [
    ({"messages": BODY["messages"]}, 400, "model"),
    ({"model": "m", "messages": []}, 400, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0]"),
])
async def test_malformed_requests_get_openai_errors(fake_llm, body, status, words):
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake_llm.url}/chat/completions", json=body, headers=AUTH)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


async def test_a_wrong_token_gets_401(fake_llm):
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake_llm.url}/chat/completions", json=BODY,
                                     headers={"Authorization": "Bearer nope"})
        bad_json = await client.post(f"{fake_llm.url}/chat/completions", content=b"{", headers=AUTH)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert bad_json.status_code == 400


async def test_fail_count_clears_itself(fake_llm):
    fake_llm.set_knobs(fail_status=429, fail_count=2)
    async with httpx.AsyncClient() as client:
        statuses = [(await client.post(f"{fake_llm.url}/chat/completions", json=BODY, headers=AUTH)).status_code
                    for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert fake_llm.stats.failed == 2 and fake_llm.stats.completed == 1


def test_knobs_are_checked_by_name_and_type():
    knobs = LLMKnobs()
    with pytest.raises(ValueError, match="unknown knob"):
        knobs.update({"speed": 1})
    with pytest.raises(ValueError, match="piece_delay_ms"):
        knobs.update({"piece_delay_ms": -1})
    with pytest.raises(ValueError, match="answers"):
        knobs.update({"answers": {"a": 1}})
    with pytest.raises(ValueError, match="piece_chars"):
        knobs.update({"piece_chars": -2})
    knobs.update({"answer": "x", "piece_delay_ms": 5, "fail_after_pieces": 1})
    assert (knobs.answer, knobs.piece_delay_ms, knobs.fail_after_pieces) == ("x", 5.0, 1)


async def test_control_endpoints_drive_a_running_endpoint(fake_llm):
    async with httpx.AsyncClient(base_url=fake_llm.url.removesuffix("/v1")) as client:
        assert (await client.post("/_emulator/knobs", json={"answer": "Да."})).json()["answer"] == "Да."
        assert (await client.post("/_emulator/knobs", json={"nope": 1})).status_code == 400
        await client.post("/v1/chat/completions", json=BODY, headers=AUTH)
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["requests"] == 1 and stats["log"][0]["answer"] == "Да."
        assert (await client.get("/v1/models")).status_code == 401  # the key is checked, as by OpenAI
        assert (await client.get("/v1/models", headers=AUTH)).json()["data"][0]["object"] == "model"
        await client.post("/_emulator/reset")
        assert (await client.get("/_emulator/stats")).json()["requests"] == 0
        assert (await client.get("/_emulator/knobs")).json()["answer"] == ""


async def test_the_cli_serves_until_terminated():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "llm-emulator", "--port", "0", "--answer", "Ок.",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("listening on http://127.0.0.1:") and line.strip().endswith("/v1")
        url = line.split()[-1]
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{url}/chat/completions", json=BODY)
        assert response.json()["choices"][0]["message"]["content"] == "Ок."
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


async def test_an_emulator_started_with_knobs_resets_to_them():
    async with LLMEmulator(knobs=LLMKnobs(answer="Старт.")) as emulator:
        emulator.set_knobs(answer="Потом.")
        emulator.reset()
        assert emulator.answer_for("x") == "Старт."
