"""`voice-bridge check` and `bridge.preflight` against real services: the tests' private Redis, the ElevenLabs
emulator and the fake LLM over real HTTP on loopback, a closed port for a service that is down."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from bridge.cli import main
from bridge.config import BridgeConfig, Settings
from bridge.dialogue import default_dialogue_path, load_dialogue, parse_dialogue
from bridge.preflight import (
    CheckResult,
    RedisCheck,
    preflight_at_start,
    run_preflight,
    url_database,
)
from support.process import ROOT
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, ConfigError, TTSConfig, load
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator
from voice.emulators.llm import LLMEmulator
from voice.http import aclose_shared_client
from voice.keys import static_key
from voice.stt.config import STTConfig

FRAGMENTS = ROOT / "bridge" / "data" / "fragments"
LLM_KEY = "llm-check-key"
LLM_MODEL = "check-model"
BASIC_NAMES = ["redis", "tts-key", "tts-voice", "tts-model", "fragments"]

LLM_DIALOGUE = """
start = "ask"
[nodes.ask]
play = [ { static = "hello" }, { llm = "Say hello" } ]
hangup = true
"""


@pytest.fixture(autouse=True)
async def clean_process(monkeypatch):
    """No setting leaks in from the developer's environment; no cache singleton or HTTP client leaks out."""
    for name in list(os.environ):
        if name.startswith(("ELEVENLABS_", "LLM_", "STT_", "REDIS_", "DIALOGUE_", "FILLERS", "BRIDGE_")):
            monkeypatch.delenv(name)
    await RedisCacheManager.reset_instance()
    yield
    await aclose_shared_client()
    await RedisCacheManager.reset_instance()


@pytest.fixture
async def loaded_redis(redis_url):
    """The tests' Redis with every sample fragment loaded, as `voice-bridge load-audio` leaves it."""
    cache = RedisCacheManager(CacheConfig(redis_url=redis_url))
    for wav in sorted(FRAGMENTS.glob("*.wav")):
        assert (await cache.load_and_set_audio(static_key(wav.stem), str(wav))).stored
    await RedisCacheManager.reset_instance()
    return redis_url


@pytest.fixture
async def fake_llm():
    async with LLMEmulator(api_key=LLM_KEY, model=LLM_MODEL) as llm:
        yield llm


# Redis timeouts for a loaded machine (the suite runs on several workers): the default quarter second can
# pass before a busy process gets its first connection; a Redis that is down refuses at once either way.
PATIENT_REDIS = {"redis_connect_timeout_s": 5.0, "redis_socket_timeout_s": 5.0}


def flags(redis_url: str, emulator: Emulator, *extra: str, key: str = DEFAULT_API_KEY) -> list[str]:
    return ["check", "--redis-url", redis_url, "--redis-connect-timeout", "5", "--redis-socket-timeout", "5",
            "--elevenlabs-base-url", emulator.url, "--elevenlabs-api-key", key,
            "--elevenlabs-voice-id", DEFAULT_VOICES[0], *extra]


async def check_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """`voice-bridge check ...` in-process, on a thread (it runs its own event loop) while ours serves the
    emulators; returns its exit status and its stdout lines."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    print(captured.err, file=sys.stderr)  # back where the test's own report shows it
    return status, captured.out.splitlines()


def line_of(lines: list[str], name: str) -> str:
    found = [line for line in lines if line.split()[1] == name]
    assert len(found) == 1, (name, lines)
    return found[0]


def settings_for(redis_url: str, emulator: Emulator, **tts: str) -> Settings:
    return Settings(bridge=BridgeConfig(), cache=CacheConfig(redis_url=redis_url, **PATIENT_REDIS),
                    tts=TTSConfig(**{"api_key": DEFAULT_API_KEY, "base_url": emulator.url,
                                     "voice_id": DEFAULT_VOICES[0], **tts}))


def write_dialogue(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dialogue.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- the command --------------------------------------------------------------------------------------------


async def test_all_good_exits_0_and_every_line_is_ok(loaded_redis, emulator, capsys):
    status, lines = await check_cli(flags(loaded_redis, emulator), capsys)
    assert status == 0, lines
    assert [line.split()[1] for line in lines] == BASIC_NAMES
    assert all(line.startswith("ok   ") for line in lines), lines
    assert line_of(lines, "redis") == f"ok   redis        {loaded_redis} reachable, write/read ok"
    assert "key accepted" in line_of(lines, "tts-key")
    assert "static" not in line_of(lines, "fragments") and "fallback" in line_of(lines, "fragments")
    assert emulator.stats.reads["GET /v1/user"] == 1  # the key was really asked about
    assert emulator.stats.http_requests == 0  # and nothing was synthesised (no characters billed)
    leftovers = redis.Redis.from_url(loaded_redis).keys("preflight:*")
    assert leftovers == []  # the scratch key is deleted


async def test_redis_down_fails_naming_redis_url(emulator, unused_port, capsys):
    url = f"redis://127.0.0.1:{unused_port}/0"
    status, lines = await check_cli(flags(url, emulator), capsys)
    assert status == 1
    redis_line = line_of(lines, "redis")
    assert redis_line.startswith("FAIL redis") and f"REDIS_URL={url} unreachable" in redis_line
    assert "-> start Redis there, or set REDIS_URL" in redis_line
    assert line_of(lines, "fragments").startswith("warn fragments    not checked: Redis unreachable")
    assert line_of(lines, "tts-key").startswith("ok ")  # the other checks still ran


async def test_bad_key_fails_naming_elevenlabs_api_key(loaded_redis, emulator, capsys):
    status, lines = await check_cli(flags(loaded_redis, emulator, key="not-the-key"), capsys)
    assert status == 1
    key_line = line_of(lines, "tts-key")
    assert key_line.startswith("FAIL tts-key      401 invalid_api_key: Invalid API key  -> set ELEVENLABS_API_KEY")
    assert "not-the-key" not in "\n".join(lines)  # a key is never printed
    # voice and model could not be verified: warnings (one failure, said once), not failures
    assert line_of(lines, "tts-voice").startswith("warn tts-voice    not checked: 401 invalid_api_key")
    assert line_of(lines, "tts-model").startswith("warn ")


async def test_missing_key_fails_before_any_request(loaded_redis, emulator, capsys):
    status, lines = await check_cli(flags(loaded_redis, emulator, key=""), capsys)
    assert status == 1
    assert "ELEVENLABS_API_KEY is not set" in line_of(lines, "tts-key")
    assert sum(emulator.stats.reads.values()) == 0


async def test_unknown_voice_and_model_are_warnings_not_failures(loaded_redis, emulator, capsys):
    argv = flags(loaded_redis, emulator, "--elevenlabs-model-id", "eleven_nonexistent_v9")
    argv[argv.index(DEFAULT_VOICES[0])] = "NoSuchVoice123"
    status, lines = await check_cli(argv, capsys)
    assert status == 0, lines
    assert line_of(lines, "tts-voice").startswith("warn tts-voice    ELEVENLABS_VOICE_ID=NoSuchVoice123: 404 "
                                                  "voice_not_found")
    model_line = line_of(lines, "tts-model")
    assert model_line.startswith("warn tts-model    ELEVENLABS_MODEL_ID=eleven_nonexistent_v9 is not among")
    assert "eleven_flash_v2_5" in model_line


async def test_a_missing_dialogue_fragment_is_named_with_its_node(loaded_redis, emulator, tmp_path, capsys):
    text = default_dialogue_path().read_text(encoding="utf-8").replace('{ static = "menu"', '{ static = "menu_v2"')
    dialogue = write_dialogue(tmp_path, text)
    status, lines = await check_cli(flags(loaded_redis, emulator, "--dialogue-file", dialogue), capsys)
    assert status == 1
    fragments = line_of(lines, "fragments")
    assert fragments.startswith("FAIL fragments    1 of 8 missing: static:menu_v2 (node 'greeting')")
    assert "-> load them: voice-bridge load-audio menu_v2.wav" in fragments
    assert all(line.startswith("ok ") for line in lines if line.split()[1] != "fragments")


async def test_missing_fallback_and_filler_are_named(loaded_redis, emulator, capsys):
    redis.Redis.from_url(loaded_redis).delete(static_key("fallback"), static_key("filler_aga"))
    status, lines = await check_cli(flags(loaded_redis, emulator), capsys)
    assert status == 1
    fragments = line_of(lines, "fragments")
    assert "2 of 8 missing: static:filler_aga (FILLERS), static:fallback (the fallback)" in fragments
    assert "voice-bridge load-audio filler_aga.wav fallback.wav" in fragments


async def test_fillers_setting_decides_which_fillers_are_needed(loaded_redis, emulator, capsys):
    status, lines = await check_cli(flags(loaded_redis, emulator, "--fillers", "filler_tak,filler_hmm"), capsys)
    assert status == 1
    assert "static:filler_hmm (FILLERS)" in line_of(lines, "fragments")


async def test_llm_dialogue_with_the_llm_down_fails_naming_llm_base_url(loaded_redis, emulator, unused_port,
                                                                         tmp_path, capsys):
    dialogue = write_dialogue(tmp_path, LLM_DIALOGUE)
    base = f"http://127.0.0.1:{unused_port}/v1"
    status, lines = await check_cli(flags(loaded_redis, emulator, "--dialogue-file", dialogue,
                                          "--llm-base-url", base), capsys)
    assert status == 1
    llm_line = line_of(lines, "llm")
    assert llm_line.startswith(f"FAIL llm          cannot reach LLM_BASE_URL={base}: ConnectError")
    assert "-> start the endpoint, or set LLM_BASE_URL" in llm_line


async def test_llm_dialogue_with_the_llm_up(loaded_redis, emulator, fake_llm, tmp_path, capsys):
    dialogue = write_dialogue(tmp_path, LLM_DIALOGUE)
    base = ["--dialogue-file", dialogue, "--llm-base-url", fake_llm.url, "--llm-model", LLM_MODEL]
    status, lines = await check_cli(flags(loaded_redis, emulator, *base, "--llm-api-key", LLM_KEY), capsys)
    assert status == 0, lines
    assert (
        line_of(lines, "llm") == f"ok   llm          {fake_llm.url} reachable, key accepted, model {LLM_MODEL} listed"
    )

    status, lines = await check_cli(flags(loaded_redis, emulator, *base, "--llm-api-key", "wrong"), capsys)
    assert status == 1
    assert "401 invalid_api_key: Incorrect API key provided." in line_of(lines, "llm")
    assert "LLM_API_KEY is refused  -> set LLM_API_KEY" in line_of(lines, "llm")


async def test_llm_base_url_without_v1_is_named(loaded_redis, emulator, fake_llm, tmp_path, capsys):
    dialogue = write_dialogue(tmp_path, LLM_DIALOGUE)
    bare = fake_llm.url.removesuffix("/v1")
    status, lines = await check_cli(flags(loaded_redis, emulator, "--dialogue-file", dialogue, "--llm-base-url",
                                          bare, "--llm-api-key", LLM_KEY), capsys)
    assert status == 1
    llm_line = line_of(lines, "llm")
    assert f"POST {bare}/chat/completions" in llm_line  # /models was not there: a completion was tried
    assert "it should end in /v1" in llm_line


async def test_llm_dialogue_without_llm_settings_is_a_configuration_error(loaded_redis, emulator, tmp_path,
                                                                            capsys):
    dialogue = write_dialogue(tmp_path, LLM_DIALOGUE)
    status, lines = await check_cli(flags(loaded_redis, emulator, "--dialogue-file", dialogue), capsys)
    assert status == 2 and lines == []
    assert "configuration error: LLM_BASE_URL: not set, but the dialogue" in capsys.readouterr().err


async def test_json_report(loaded_redis, emulator, capsys):
    redis.Redis.from_url(loaded_redis).delete(static_key("hello"))
    status, lines = await check_cli(flags(loaded_redis, emulator, "--json"), capsys)
    assert status == 1
    document = json.loads("\n".join(lines))
    assert document["ok"] is False and document["counts"] == {"ok": 4, "warn": 0, "fail": 1}
    assert [c["name"] for c in document["checks"]] == BASIC_NAMES
    for check in document["checks"]:
        assert set(check) == {"name", "status", "detail", "remedy"} and check["status"] in ("ok", "warn", "fail")
    fragments = document["checks"][BASIC_NAMES.index("fragments")]
    assert fragments["status"] == "fail" and "static:hello (node 'greeting')" in fragments["detail"]
    assert fragments["remedy"].startswith("load them: voice-bridge load-audio hello.wav")


async def test_as_a_subprocess(loaded_redis, emulator):
    """`python -m bridge check` as an operator runs it: settings from the environment; exit status 0, then 2."""
    env = {**os.environ, "REDIS_URL": loaded_redis, "ELEVENLABS_BASE_URL": emulator.url,
           "ELEVENLABS_API_KEY": DEFAULT_API_KEY, "ELEVENLABS_VOICE_ID": DEFAULT_VOICES[0], "LOG_LEVEL": "error",
           "REDIS_CONNECT_TIMEOUT": "5", "REDIS_SOCKET_TIMEOUT": "5"}  # as PATIENT_REDIS

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", "check", *args, env=env,
                                                    cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    status, out, err = await run()
    assert status == 0, (out, err)
    assert [line.split()[:2] for line in out.splitlines()] == [["ok", name] for name in BASIC_NAMES]

    status, out, err = await run("--elevenlabs-output-format", "mp3_9")
    assert status == 2 and out == ""
    assert "configuration error: ELEVENLABS_OUTPUT_FORMAT" in err


# --- the functions serve calls ------------------------------------------------------------------------------


async def test_run_preflight_with_serves_cache_and_the_failure_log(loaded_redis, emulator):
    redis.Redis.from_url(loaded_redis).delete(static_key("goodbye"))
    settings = settings_for(loaded_redis, emulator, api_key="refused")
    cache = RedisCacheManager(settings.cache)  # what serve's runtime holds
    with capture_logs() as logs:
        results = await preflight_at_start(settings, load_dialogue(default_dialogue_path()), cache=cache)
    failed = {r.name: r for r in results if r.status == "fail"}
    assert set(failed) == {"tts-key", "fragments"}
    assert "static:goodbye (node 'goodbye')" in failed["fragments"].detail
    assert await cache.ping()  # the runtime's cache is left open for the calls
    logs = [e for e in logs if e["event"].startswith("preflight")]
    failures = [e for e in logs if e["event"] == "preflight_failed"]
    assert [(e["log_level"], e["check"]) for e in failures] == [("warning", "tts-key"), ("warning", "fragments")]
    assert all(e["detail"] and e["remedy"] for e in failures)
    assert logs[-1] == {"event": "preflight_done", "log_level": "info", "ok": 1, "warn": 2, "fail": 2}


async def test_a_check_that_gets_no_answer_fails_in_its_timeout(loaded_redis):
    """A TTS endpoint that accepts connections and never answers: the check fails at its timeout, naming
    the setting, and the other checks are not held up by it."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # read forever, answer nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = Settings(bridge=BridgeConfig(), cache=CacheConfig(redis_url=loaded_redis, **PATIENT_REDIS),
                            tts=TTSConfig(api_key="k", base_url=f"http://127.0.0.1:{port}"))
        # 2 s: time enough for Redis on a loaded machine, still far below the default
        results = await run_preflight(settings, load_dialogue(default_dialogue_path()), timeout_s=2.0)
    finally:
        server.close()
    by_name = {r.name: r for r in results}
    assert by_name["tts-key"] == CheckResult("tts-key", "fail", "no answer within 2 s",
                                             "check ELEVENLABS_BASE_URL: is the service up and reachable from "
                                             "this host?")
    assert by_name["redis"].status == "ok" and by_name["fragments"].status == "ok"


async def test_openai_stt_endpoint_is_checked_with_its_own_key(loaded_redis, emulator, fake_llm):
    settings = settings_for(loaded_redis, emulator)
    dialogue = load_dialogue(default_dialogue_path())
    stt = STTConfig(
        stt_provider="openai", stt_openai_base_url=fake_llm.url, stt_openai_api_key="wrong", stt_model=LLM_MODEL
    )
    results = await run_preflight(settings, dialogue, stt=stt)
    stt_result = results[-1]
    assert stt_result.name == "stt" and stt_result.status == "fail"
    assert "STT_OPENAI_API_KEY is refused" in stt_result.detail and "STT_OPENAI_API_KEY" in stt_result.remedy

    good = STTConfig(
        stt_provider="openai", stt_openai_base_url=fake_llm.url, stt_openai_api_key=LLM_KEY, stt_model=LLM_MODEL
    )
    assert (await run_preflight(settings, dialogue, stt=good))[-1].status == "ok"
    # the ElevenLabs recognizer shares the TTS key: no separate line, the key's line says so
    results = await run_preflight(settings, dialogue, stt=STTConfig(stt_provider="elevenlabs"))
    assert [r.name for r in results] == BASIC_NAMES and "also the STT key" in results[1].detail


# --- Redis details ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "db"), [("redis://h:1", 0), ("redis://h:1/", 0), ("redis://h:1/3", 3),
                                         ("redis://h:1/?db=2", 2), ("unix:///tmp/r.sock?db=4", 4)])
def test_url_database(url, db):
    assert url_database(url) == db


@pytest.mark.parametrize("path", ["abc", "9x", "-1"])
def test_a_database_that_is_not_a_number_is_named(path):
    with pytest.raises(ValueError, match=f"the database '{path}' after the last '/' is not a number"):
        url_database(f"redis://h:1/{path}")


async def test_redis_check_names_a_bad_or_unselectable_database(redis_server):
    base = redis_server.url.rsplit("/", 1)[0]
    with pytest.raises(ConfigError, match="REDIS_URL"):  # not a number: refused with the settings, exit 2
        load(CacheConfig, {"REDIS_URL": f"{base}/abc"})
    result = await RedisCheck(CacheConfig(redis_url=f"{base}/99")).run()
    assert result.status == "fail" and f"REDIS_URL={base}/99: database 99 cannot be selected" in result.detail
    assert (await RedisCheck(CacheConfig(redis_url=f"{base}/5")).run()).status == "ok"


async def test_fragments_are_not_looked_up_in_the_wrong_database(loaded_redis, emulator):
    """A database Redis cannot select: the check must not look the fragments up elsewhere and say they are present."""
    settings = settings_for(loaded_redis.rsplit("/", 1)[0] + "/99", emulator)
    results = {r.name: r for r in await run_preflight(settings, load_dialogue(default_dialogue_path()))}
    assert results["redis"].status == "fail"
    assert results["fragments"] == CheckResult("fragments", "warn",
                                               "not checked: Redis unreachable (8 fragments to look up; see redis)")


async def test_redis_check_masks_a_password(unused_port):
    result = await RedisCheck(CacheConfig(redis_url=f"redis://user:s3cret@127.0.0.1:{unused_port}/0")).run()
    assert result.status == "fail" and "s3cret" not in result.detail and "user:***@" in result.detail


def test_dialogue_walk_covers_every_static_item_fillers_and_fallback():
    from bridge.preflight import playable_fragments

    dialogue = parse_dialogue("""
start = "ask"
[nodes.ask]
play = [ { static = "hello" }, { tts = "{amount}" }, { static = "hello" } ]
next = "other"
[nodes.other]
play = [ { llm = "Say hello" }, { static = "hello", text = "Привет" } ]
hangup = true
""")
    uses = playable_fragments(dialogue, ("filler_tak", "hello"))
    assert uses == {"hello": ["node 'ask'", "node 'other'", "FILLERS"], "filler_tak": ["FILLERS"],
                    "fallback": ["the fallback"]}
