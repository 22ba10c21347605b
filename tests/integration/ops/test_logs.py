"""Logs: JSON from `serve` by default, console on a terminal, every call's lines carry its UUID, no secret
ever appears (checked on the captured output of a real run whose API key and Redis password are in use)."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
import redis
import structlog

from bridge.config import Settings
from bridge.ops import logs
from bridge.sim.caller import place_call
from support.process import ServeProcess, clean_env, load_fragments
from voice.config import secret_settings
from voice.emulators.elevenlabs import Emulator, Knobs
from voice.emulators.llm import LLMEmulator, LLMKnobs

API_KEY = "sk_LEAKCHECK_0123456789abcdef"
PASSWORD = "pw-LEAKCHECK-s3cr3t"

DIALOGUE = """
start = "greeting"
[vars]
amount = "4321"
[nodes.greeting]
play = [ { static = "hello" }, { tts = "{amount}" }, { static = "goodbye" } ]
hangup = true
"""


@pytest.fixture
def password_redis(own_redis):
    """A private Redis that requires a password."""
    client = redis.Redis(port=own_redis.port)
    client.config_set("requirepass", PASSWORD)
    client.close()
    return f"redis://:{PASSWORD}@127.0.0.1:{own_redis.port}/0"


@pytest.mark.slow
async def test_secrets_never_appear_in_the_logs_of_a_real_run(password_redis, tmp_path):
    await load_fragments(password_redis)
    dialogue = tmp_path / "dialogue.toml"
    dialogue.write_text(DIALOGUE)
    # the emulator accepts only its own key: ours is sent with every request and refused (401)
    async with Emulator(api_key="the-only-good-key") as emulator:
        env = clean_env(REDIS_URL=password_redis, ELEVENLABS_API_KEY=API_KEY, ELEVENLABS_BASE_URL=emulator.url,
                        DIALOGUE_FILE=str(dialogue), BRIDGE_PORT="0", LOG_LEVEL="debug", TTS_RETRY_BACKOFF="0.01")
        async with ServeProcess(env=env) as serve:
            report = await place_call("127.0.0.1", serve.port, duration_s=None, max_wait_s=20)
            assert await serve.stop() == 0
        assert emulator.stats.http_status[401] >= 1  # the key really went out, and was refused
    output = serve.output
    assert API_KEY not in output and PASSWORD not in output
    assert API_KEY[4:-4] not in output and PASSWORD[3:-3] not in output  # not even a part of them
    # the run really used both: Redis with its password (fragments played), TTS with the key (refused)
    assert report.hangup == "server" and report.first_audio_ms is not None
    assert any(line.get("event") == "cache_connected" for line in serve.lines)
    settings = next(line for line in serve.lines if line.get("event") == "settings")
    assert settings["ELEVENLABS_API_KEY"] == "***"
    assert settings["REDIS_URL"] == f"redis://:***@127.0.0.1:{password_redis.rsplit(':', 1)[1]}"
    failed = next(line for line in serve.lines if line.get("event") == "synthesis_failed")
    assert "401" in failed["error"] or "API key" in failed["error"]
    # JSON by default when stderr is not a terminal: every line parsed
    assert not [line for line in serve.lines if line.get("event") == "non-json"]
    # every line about the call carries its UUID, the voice side's too
    for event in ("call_started", "node", "synthesis_failed", "tts_item_failed", "call_ended", "dialogue_ended"):
        lines = [line for line in serve.lines if line.get("event") == event]
        assert lines, event
        assert all(line.get("call") == report.uuid for line in lines), (event, lines)


def test_redaction_covers_nested_values_exceptions_and_library_records():
    stream = io.StringIO()
    logs.configure_logging("debug", "json", stream=stream)
    logs.register_settings_secrets(Settings.load({"ELEVENLABS_API_KEY": API_KEY,
                                                  "REDIS_URL": f"redis://user:{PASSWORD}@10.0.0.1:6379/0"}))

    class Request:
        def __repr__(self) -> str:
            return f"<Request headers={{'xi-api-key': '{API_KEY}'}}>"

    log = structlog.get_logger("test")
    log.info("plain", url=f"redis://user:{PASSWORD}@10.0.0.1:6379/0")
    log.info("nested", headers={"xi-api-key": API_KEY, "other": [f"Bearer {API_KEY}"]})
    log.info("object", request=Request())
    log.info("keyed", api_key="not-registered-but-named-as-a-secret")
    try:
        raise RuntimeError(f"connect failed with key {API_KEY}")
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("httpx").warning("sending key %s", API_KEY)
    logging.getLogger("asyncio").error("Task exception: %s", PASSWORD)
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 7
    assert API_KEY not in text and PASSWORD not in text and "not-registered" not in text
    assert lines[0]["url"] == "redis://user:***@10.0.0.1:6379/0"
    assert lines[1]["headers"] == {"xi-api-key": "***", "other": ["Bearer ***"]}
    assert "***" in lines[2]["request"] and "***" in lines[4]["exception"]
    assert lines[5]["logger"] == "httpx" and lines[5]["event"] == "sending key ***"
    assert lines[6]["level"] == "error"


def test_a_secret_is_masked_in_its_escaped_forms_too():
    stream = io.StringIO()
    logs.configure_logging("info", "json", stream=stream)
    secret = 'p"ä%40ss\\word'
    logs.register_secret(secret)
    structlog.get_logger().info("x", value=f"before {secret} after", decoded="p\"ä@ss\\word")
    assert json.loads(stream.getvalue()) | {"timestamp": None} == {
        "value": "before *** after", "decoded": "***", "event": "x", "level": "info", "timestamp": None}


def test_console_on_a_terminal_json_otherwise():
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            logs.configure_logging("info", "auto", stream=terminal)
            structlog.get_logger().info("hello", call="abc")
            terminal.flush()
            written = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "hello" in written and "call=abc" in written and not written.lstrip().startswith("{")

    stream = io.StringIO()
    logs.configure_logging("info", "auto", stream=stream)
    structlog.get_logger().info("hello", call="abc")
    assert json.loads(stream.getvalue())["call"] == "abc"


def test_logs_follow_stderr_when_it_is_replaced(monkeypatch):
    """Configured once, logging writes to whatever `sys.stderr` is now (a closed old stream is never used)."""
    import sys

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure_logging("info", "json")
    structlog.get_logger().info("one")
    logging.getLogger("aiohttp.server").error("two")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger().info("three")
    logging.getLogger("aiohttp.server").error("four")
    assert [json.loads(line)["event"] for line in second.getvalue().splitlines()] == ["three", "four"]


def test_the_settings_line_shows_every_unset_secret_the_same_way():
    stream = io.StringIO()
    logs.configure_logging("info", "json", stream=stream)
    secrets = [env for _, env in secret_settings(Settings)]
    assert {"ELEVENLABS_API_KEY", "LLM_API_KEY", "STT_OPENAI_API_KEY"} <= set(secrets)
    structlog.get_logger().info("settings", **logs.settings_for_log(Settings.load({})))
    structlog.get_logger().info("settings", **logs.settings_for_log(Settings.load(
        {env: API_KEY if i % 2 else API_KEY[::-1] for i, env in enumerate(secrets)})))
    unset, given = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {env: unset[env] for env in secrets} == dict.fromkeys(secrets, None)  # every key alike
    assert {env: given[env] for env in secrets} == dict.fromkeys(secrets, "***")
    assert API_KEY not in stream.getvalue() and API_KEY[::-1] not in stream.getvalue()


def test_on_a_terminal_the_settings_line_is_readable():
    stream = io.StringIO()
    logs.configure_logging("info", "console", stream=stream)
    settings = logs.settings_for_log(Settings.load({"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:6379/2"}))
    structlog.get_logger().info("settings", **settings)
    structlog.get_logger().info("short", call="abc", port=1)
    lines = stream.getvalue().splitlines()
    assert "settings" in lines[0] and len(lines[0]) < 120
    assert "    BRIDGE_PORT=9092" in lines and "    REDIS_URL=redis://:***@127.0.0.1:6379/2" in lines
    assert len(lines) == 1 + len(settings) + 1  # one line per setting, and a short line stays one line
    assert "short" in lines[-1] and "call=abc" in lines[-1]
    assert PASSWORD not in stream.getvalue()


def test_the_cli_configures_logging_once_with_a_subcommand_default(capsys):
    import argparse
    import types

    from bridge.cli import prepare_process

    demo_like = types.SimpleNamespace(DEFAULT_LOG_LEVEL="warning")
    prepare_process(argparse.Namespace(_module=demo_like), environ={"LOG_FORMAT": "json"})
    structlog.get_logger().info("hidden")
    structlog.get_logger().warning("shown")
    prepare_process(argparse.Namespace(_module=demo_like), environ={"LOG_LEVEL": "info", "LOG_FORMAT": "json"})
    structlog.get_logger().info("asked_for")
    prepare_process(argparse.Namespace(_module=demo_like, log_level="debug"), environ={"LOG_FORMAT": "json"})
    structlog.get_logger().debug("flagged")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["shown", "asked_for", "flagged"]


CALL_DIALOGUE = """
start = "greeting"
[vars]
amount = "4321"
[nodes.greeting]
play = [ { static = "hello" }, { tts = "{amount}" }, { static = "no_such_fragment" },
         { tts = "Эта фраза длиннее, чем эмулятор разрешает." }, { llm = "Скажи сумму {amount}" },
         { static = "goodbye" } ]
hangup = true
"""
PROCESS_EVENTS = {"clock_stats", "stop_signal", "signal_received", "stopping",
                  "stopped", "metrics_listening"}
"""Lines about the process, not a call, that may fall between a call's first and last line."""


async def test_every_line_about_a_call_carries_call_and_peer(redis_url, tmp_path):
    """One call through static fragments, a synthesis that fails (too long for the emulator), one that
    succeeds (and is cached), a missing fragment and an LLM answer over the TTS WebSocket: every line from
    its start to its end names the call and the peer, the voice side's lines (syntheses, cache writes)
    included."""
    await load_fragments(redis_url)
    dialogue = tmp_path / "dialogue.toml"
    dialogue.write_text(CALL_DIALOGUE)
    async with Emulator(api_key=None, knobs=Knobs(max_characters=30)) as emulator, \
            LLMEmulator(knobs=LLMKnobs(answer="Сумма четыре тысячи.")) as llm:
        env = clean_env(REDIS_URL=redis_url, ELEVENLABS_API_KEY="any-key", ELEVENLABS_BASE_URL=emulator.url,
                        DIALOGUE_FILE=str(dialogue), BRIDGE_PORT="0", LOG_LEVEL="debug", TTS_MAX_RETRIES="0",
                        LLM_BASE_URL=llm.url)
        async with ServeProcess(env=env) as serve:
            await serve.wait_for("preflight_done", 30)  # the start-up checks' lines are the process's, not the call's
            report = await place_call("127.0.0.1", serve.port, duration_s=None, max_wait_s=20)
            assert await serve.stop() == 0
    assert report.hangup == "server"
    events = [line.get("event") for line in serve.lines]
    start = next(i for i, e in enumerate(events) if e in ("call_started", "call_started"))
    end = max(i for i, e in enumerate(events) if e in ("call_ended", "call_ended", "dialogue_ended"))
    peer = serve.lines[start]["peer"]
    assert serve.lines[start]["call"] == report.uuid and peer.startswith("127.0.0.1:")
    about_the_call = [line for line in serve.lines[start:end + 1] if line.get("event") not in PROCESS_EVENTS]
    seen = {line.get("event") for line in about_the_call}
    # the voice side spoke (syntheses, the LLM, the TTS WebSocket), and each kind of trouble happened
    assert {"synthesis_failed", "synthesis_levelled", "llm_first_piece", "tts_ws_connected", "fragment_missing",
            "dialogue_ended"} <= seen, seen
    unnamed = [line for line in about_the_call if line.get("call") != report.uuid or line.get("peer") != peer]
    assert not unnamed, unnamed
