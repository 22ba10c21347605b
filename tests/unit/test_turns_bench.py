"""The spoken-turn benchmark's arithmetic: the bridge's legs between the parties' stamps."""

from __future__ import annotations

import pytest

from bridge.sim.bench.llm import first_phrase
from bridge.sim.bench.turns import ANSWER, QUESTION, answers, turn_legs


def test_the_legs_are_the_bridges_time_between_services_and_add_up_to_bridge_only():
    # the caller stops at 10.000; 600 ms of endpointing; the STT service takes 52 ms from commit to final,
    # the LLM 121 ms from request to the first phrase, the TTS 55 ms from text to audio
    commit = {"commit_at": 10.603, "final_at": 10.655}
    llm = {"received_at": 10.659, "piece_at": [10.760, 10.780]}
    tts = {"text_at": 10.782, "first_audio_at": 10.837}
    legs = turn_legs(10.0, 10.850, commit, llm, 1, tts, 0.6)
    assert legs["endpoint"] == pytest.approx(3.0)
    assert legs["to_llm"] == pytest.approx(4.0)
    assert legs["to_tts"] == pytest.approx(2.0)
    assert legs["to_wire"] == pytest.approx(13.0)
    assert legs["services"] == pytest.approx(52 + 121 + 55)
    assert legs["bridge only"] == pytest.approx(22.0)
    assert legs["bridge only"] + legs["services"] + 600 == pytest.approx(850.0)  # the whole turn


def test_each_call_is_answered_with_its_number_in_the_first_phrase():
    table = answers(12)
    assert table[QUESTION.format(n=7).removeprefix("какой у меня ")] == ANSWER.format(n=7)
    assert not QUESTION.format(n=17).endswith(QUESTION.format(n=7).removeprefix("какой у меня "))
    assert first_phrase(ANSWER.format(n=7))[1] == "Номер 7,"
