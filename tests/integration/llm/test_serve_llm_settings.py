"""`serve` refuses a dialogue with `llm` items when no LLM is configured: exit status 2, the setting named.
The settings themselves: tests/unit/test_llm_settings.py."""

from __future__ import annotations

from support.process import run_serve

LLM_DIALOGUE = """
start = "ask"
[nodes.ask]
play = [ { static = "hello" }, { llm = "Поздоровайся" } ]
hangup = true
"""


async def test_serve_exits_2_for_an_llm_dialogue_without_llm_base_url(tmp_path):
    path = tmp_path / "llm.toml"
    path.write_text(LLM_DIALOGUE, encoding="utf-8")
    status, err = await run_serve("--bridge-port", "0", "--dialogue-file", str(path))
    assert status == 2
    assert "LLM_BASE_URL" in err and "llm items" in err
