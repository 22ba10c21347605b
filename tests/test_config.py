"""Settings: defaults, environment, flags, and errors that name the setting."""

import argparse

import pytest

from bridge.config import Settings, add_settings_flags, settings_from_args
from voice.config import ConfigError


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
    from bridge.config import BridgeConfig, LLMConfig
    from voice.config import CacheConfig, TTSConfig

    names = [name for part in (BridgeConfig, CacheConfig, TTSConfig, LLMConfig) for name in part.model_fields]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_a_tts_timeout_flag_leaves_the_redis_timeout_alone():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    s = settings_from_args(parser.parse_args(["--tts-connect-timeout", "7"]), environ={})
    assert s.tts.connect_timeout_s == 7.0
    assert s.cache.redis_connect_timeout_s == 0.25
