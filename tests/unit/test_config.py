"""Settings: defaults, environment, flags, and errors that name the setting."""

import argparse
import json

import pytest
from pydantic import SecretStr

from bridge.cli import main
from bridge.config import PARTS, BridgeConfig, Settings, add_settings_flags, settings_from_args
from bridge.sim.caller import CallerSettings
from voice.config import CacheConfig, ConfigError, LLMConfig, LogSettings, TTSConfig, env_names, load
from voice.emulators.elevenlabs import EmulatorSettings
from voice.emulators.llm import LLMEmulatorSettings


def test_defaults_match_the_public_contract():
    s = Settings.load(environ={})
    assert (s.bridge.host, s.bridge.port) == ("127.0.0.1", 9092)
    assert s.cache.redis_url == "redis://127.0.0.1:6379/0"
    assert s.tts.base_url == "https://api.elevenlabs.io"
    assert s.tts.ws_base_url == "wss://api.elevenlabs.io"
    assert s.tts.model_id == "eleven_flash_v2_5"
    assert s.tts.output_format == "pcm_16000"


def test_environment_is_read_and_ws_url_derived():
    s = Settings.load(environ={"BRIDGE_PORT": "9100", "ELEVENLABS_BASE_URL": "http://127.0.0.1:8080/",
                               "REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    assert s.bridge.port == 9100
    assert s.tts.ws_base_url == "ws://127.0.0.1:8080"
    assert s.cache.is_cluster


@pytest.mark.parametrize(
    "env, name, words",
    [
        ({"BRIDGE_PORT": "ninety"}, "BRIDGE_PORT", "whole number"),
        ({"BRIDGE_PORT": "70000"}, "BRIDGE_PORT", "between"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL", "scheme"),
        ({"ELEVENLABS_OUTPUT_FORMAT": "mp3_44100_128"}, "ELEVENLABS_OUTPUT_FORMAT", "must be one of"),
        ({"ELEVENLABS_VOICE_SETTINGS": "[1]"}, "ELEVENLABS_VOICE_SETTINGS", "JSON object"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "must be one of"),
    ],
)
def test_bad_values_name_the_setting(env, name, words):
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=env)
    assert info.value.setting == name
    assert str(info.value).startswith(name + ":")
    assert words in str(info.value)


def test_flags_override_environment():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    args = parser.parse_args(["--bridge-port", "0", "--redis-url", "redis://127.0.0.1:1/0"])
    s = settings_from_args(args, environ={"BRIDGE_PORT": "9100"})
    assert s.bridge.port == 0
    assert s.cache.redis_url == "redis://127.0.0.1:1/0"


def test_api_key_is_not_in_repr():
    s = Settings.load(environ={"ELEVENLABS_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(s)


def test_field_names_are_unique_across_parts():
    """Flags and overrides are keyed by field name: two parts sharing one would set both at once."""
    names = [name for part in PARTS for name in part.model_fields]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_a_tts_timeout_flag_leaves_the_redis_timeout_alone():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    s = settings_from_args(parser.parse_args(["--tts-connect-timeout", "7"]), environ={})
    assert s.tts.connect_timeout_s == 7.0
    assert s.cache.redis_connect_timeout_s == 0.25


# --- pydantic-settings: every source, every error names its variable and value ------------------------

SETTINGS_VARIABLES = env_names(Settings)


@pytest.fixture
def no_settings_in_environment(monkeypatch, tmp_path):
    """A process environment and working directory without any of the project's variables or a `.env`."""
    for name in [*SETTINGS_VARIABLES, "EMULATOR_PORT", "LLM_EMULATOR_PORT"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("env, value", [
    ("BRIDGE_HOST", " "),
    ("BRIDGE_PORT", "99999"),
    ("BRIDGE_PORT", "9o92"),
    ("BRIDGE_MAX_CALLS", "0"),
    ("BRIDGE_SHUTDOWN_GRACE", "soon"),
    ("BRIDGE_OUTBOUND_LIMIT", "12"),
    ("BRIDGE_UUID_TIMEOUT", "0.01"),
    ("BRIDGE_QUEUE_FRAMES", "2.5"),
    ("FILLER_AFTER", "-0.5"),
    ("BARGE_IN_RMS", "40000"),
    ("BARGE_IN_MIN_MS", "lots"),
    ("LOG_LEVEL", "loud"),
    ("METRICS_PORT", "-1"),
    ("BRIDGE_WORKERS", "1000"),
    ("REDIS_URL", "mysql://db:3306"),
    ("REDIS_URL", "redis://127.0.0.1:6379/abc"),
    ("REDIS_URL", "redis://127.0.0.1:6379/9x"),
    ("REDIS_URL", "redis://127.0.0.1:6379?db=two"),
    ("REDIS_SOCKET_TIMEOUT", "100"),
    ("REDIS_MAX_CONNECTIONS", "many"),
    ("TTS_CACHE_TTL", "0"),
    ("STATIC_MEMO_TTL", "forever"),
    ("ELEVENLABS_BASE_URL", "api.elevenlabs.io"),
    ("ELEVENLABS_VOICE_ID", ""),
    ("ELEVENLABS_OUTPUT_FORMAT", "wav"),
    ("ELEVENLABS_VOICE_SETTINGS", "{stability: 1}"),
    ("TTS_MAX_RETRIES", "11"),
    ("TTS_KEEPALIVE", "nan"),
    ("LLM_BASE_URL", "localhost:8766/v1"),
    ("LLM_MAX_TOKENS", "-5"),
    ("LLM_MEMORY_CHARS", "10"),
])
def test_each_bad_value_names_its_variable_and_the_value(env, value):
    with pytest.raises(ConfigError) as info:
        Settings.load({env: value})
    assert info.value.setting == env
    message = str(info.value)
    assert message.startswith(f"{env}: ")
    assert "\n" not in message
    if value.strip():
        assert repr(value) in message or value in message, message


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "redis://h:1/0",
                                 "redis://h:1/15", "redis://h:1/99", "rediss://u:p@h:1/3?db=3",
                                 "unix:///run/redis.sock?db=2", "redis+cluster://h:7000"])
def test_a_redis_database_is_any_whole_number(url):
    assert Settings.load({"REDIS_URL": url}).cache.redis_url == url


def test_a_bad_redis_database_is_refused_without_showing_the_password():
    with pytest.raises(ConfigError) as info:
        Settings.load({"REDIS_URL": "redis://:hunter2-secret@h:6379/9x"})
    assert info.value.setting == "REDIS_URL"
    assert "'9x'" in str(info.value) and "redis://:***@h:6379/9x" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_several_bad_values_name_the_others_too():
    with pytest.raises(ConfigError) as info:
        Settings.load({"BRIDGE_PORT": "x", "TTS_MAX_RETRIES": "x", "LLM_MODEL": " "})
    assert info.value.setting == "BRIDGE_PORT"
    assert "also wrong: LLM_MODEL, TTS_MAX_RETRIES" in str(info.value)


def test_the_dotenv_file_is_read_and_the_environment_wins(no_settings_in_environment, monkeypatch):
    (no_settings_in_environment / ".env").write_text(
        "# settings for this directory\nBRIDGE_PORT=9200\nELEVENLABS_API_KEY=sk-from-dotenv\n"
        "REDIS_URL=redis://127.0.0.1:6379/4\nLOG_LEVEL=debug\n", encoding="utf-8")
    s = Settings.load()
    assert s.bridge.port == 9200 and s.cache.redis_url.endswith("/4")
    assert s.tts.api_key.get_secret_value() == "sk-from-dotenv"
    monkeypatch.setenv("BRIDGE_PORT", "9300")
    assert Settings.load().bridge.port == 9300  # the environment wins over .env
    assert Settings.load(port=0).bridge.port == 0  # a flag wins over both
    assert LogSettings.load().log_level == "debug"  # the logging settings come from the same sources
    assert load(CacheConfig).redis_url.endswith("/4")  # and so does one part alone (load-audio)
    assert Settings.load({}).bridge.port == 9092  # an explicit mapping replaces environment and .env


def test_a_bad_value_in_the_dotenv_file_is_named(no_settings_in_environment):
    (no_settings_in_environment / ".env").write_text("BRIDGE_PORT=port\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^BRIDGE_PORT: expected a whole number, got 'port'$"):
        Settings.load()


def test_without_a_dotenv_file_the_defaults_hold(no_settings_in_environment):
    assert Settings.load() == Settings()


def test_serve_reads_the_dotenv_file(no_settings_in_environment, capsys):
    (no_settings_in_environment / ".env").write_text("METRICS_PORT=70000\n", encoding="utf-8")
    assert main(["serve"]) == 2
    assert "voice-bridge serve: configuration error: METRICS_PORT: must be between 0 and 65535, got 70000" in (
        capsys.readouterr().err)


def test_building_a_model_directly_reads_no_environment(monkeypatch):
    monkeypatch.setenv("BRIDGE_PORT", "1234")
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:1/v1")
    assert BridgeConfig().port == 9092 and Settings().bridge.port == 9092
    assert not Settings(bridge=BridgeConfig(port=5)).llm.configured
    assert Settings.load().bridge.port == 1234


def test_parts_are_built_by_field_name_and_checked():
    assert TTSConfig(api_key="k", voice_settings='{"stability": 0.5}').voice_settings == {"stability": 0.5}
    assert BridgeConfig(filler_names="a, b").filler_names == ("a", "b")
    copy = Settings().model_copy(update={"llm": LLMConfig(llm_base_url="http://127.0.0.1:9/v1/")})
    assert copy.llm.llm_base_url == "http://127.0.0.1:9/v1" and copy.bridge == BridgeConfig()
    with pytest.raises(ValueError):
        BridgeConfig(port=70000)
    with pytest.raises(ValueError):
        CacheConfig(redis_urls="redis://h")  # a misspelt keyword is an error, as it was for the dataclasses


def test_an_override_that_is_not_a_setting_is_a_programming_error():
    with pytest.raises(TypeError, match="bridge_port"):
        Settings.load({}, bridge_port=1)
    assert Settings.load({"BRIDGE_PORT": "9100"}, port=None).bridge.port == 9100  # None: flag not given


def test_secrets_are_never_rendered_by_the_models():
    s = Settings.load({"ELEVENLABS_API_KEY": "sk-never-shown", "LLM_API_KEY": "llm-never-shown",
                       "LLM_BASE_URL": "http://127.0.0.1:1/v1"})
    for text in (repr(s), str(s), repr(s.tts), s.model_dump_json(), json.dumps(s.model_dump(mode="json"))):
        assert "sk-never-shown" not in text and "llm-never-shown" not in text
    assert isinstance(s.tts.api_key, SecretStr) and isinstance(s.llm.llm_api_key, SecretStr)
    with_password = Settings.load({"REDIS_URL": "redis://user:redis-never-shown@127.0.0.1:6379/0"})
    assert "redis-never-shown" not in repr(with_password) and "user:***@127.0.0.1" in repr(with_password)
    assert with_password.cache.redis_url.startswith("redis://user:redis-never-shown@")  # the value itself works
    assert s.tts.api_key.get_secret_value() == "sk-never-shown"


@pytest.mark.parametrize("model, env, default", [
    (EmulatorSettings, "EMULATOR_PORT", 8765),
    (LLMEmulatorSettings, "LLM_EMULATOR_PORT", 8766),
    (CallerSettings, "BRIDGE_PORT", 9092),
])
def test_tool_ports_are_settings_too(model, env, default):
    assert model.load({}).port == default
    lowest = 1 if model is CallerSettings else 0  # a caller needs a real port; a server may take any free one
    assert model.load({env: str(lowest)}).port == lowest
    for bad in ("x", "65536", "-1"):
        with pytest.raises(ConfigError) as info:
            model.load({env: bad})
        assert info.value.setting == env and bad in str(info.value)


@pytest.mark.parametrize("command, env", [("emulator", "EMULATOR_PORT"), ("llm-emulator", "LLM_EMULATOR_PORT"),
                                          ("call", "BRIDGE_PORT")])
def test_a_bad_tool_port_is_one_line_and_exit_status_2(command, env, monkeypatch, capsys):
    monkeypatch.setenv(env, "70000")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"voice-bridge {command}: configuration error: {env}: must be between "
        f"{0 if command != 'call' else 1} and 65535, got 70000"]
