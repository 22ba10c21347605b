"""End to end: caller -> AudioSocket server -> orchestrator -> fake LLM + TTS emulator (WebSocket) + Redis."""

from __future__ import annotations

import asyncio

from flow.helpers import wait_for

from llm.helpers import bare, heard

GREETING = """
start = "ask"
[vars]
name = "Иван"
[nodes.ask]
play = [ { llm = "Поздоровайся с {name}" } ]
hangup = true
"""

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
