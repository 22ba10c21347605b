"""LLM settings: parsing, secrecy, the `serve` flags, and the refusal of llm dialogues without an LLM."""

from __future__ import annotations

import argparse

import pytest

from bridge.app import BridgeApp
from bridge.config import (
    BridgeConfig,
    CacheConfig,
    LLMConfig,
    Settings,
    TTSConfig,
    add_settings_flags,
    require_llm_settings,
    settings_from_args,
)
from bridge.dialogue import parse_dialogue
from voice.config import ConfigError

LLM_DIALOGUE = """
start = "ask"
[nodes.ask]
play = [ { static = "hello" }, { llm = "Поздоровайся" } ]
hangup = true
"""


def test_llm_settings_load_from_the_environment():
    settings = Settings.load({"LLM_BASE_URL": "https://api.example.com/v1/", "LLM_MODEL": "m", "LLM_API_KEY": "sk-1",
                              "LLM_MEMORY_CHARS": "500", "LLM_SUMMARY_TTL": "60", "LLM_READ_TIMEOUT": "2.5"})
    llm = settings.llm
    assert llm.llm_base_url == "https://api.example.com/v1"  # trailing slash dropped
    assert (llm.llm_model, llm.llm_api_key.get_secret_value(), llm.llm_memory_chars, llm.llm_summary_ttl_s) == (
        "m", "sk-1", 500, 60)
    assert llm.llm_read_timeout_s == 2.5
    assert llm.configured
    assert "sk-1" not in repr(settings), "the API key is a secret"


def test_without_llm_base_url_the_llm_is_not_configured():
    assert not Settings.load({}).llm.configured
    assert not Settings.load({"LLM_BASE_URL": "  "}).llm.configured


@pytest.mark.parametrize("env, value, words", [
    ("LLM_BASE_URL", "ftp://host/v1", "scheme"),
    ("LLM_BASE_URL", "http://", "no host"),
    ("LLM_MEMORY_CHARS", "ten", "whole number"),
    ("LLM_SUMMARY_TTL", "0", "between"),
    ("LLM_READ_TIMEOUT", "-1", "between"),
    ("LLM_MODEL", " ", "empty"),
])
def test_a_bad_llm_setting_is_named(env, value, words):
    with pytest.raises(ConfigError) as caught:
        Settings.load({env: value})
    assert caught.value.setting == env
    assert words in str(caught.value)


def test_llm_flags_of_serve_set_the_llm_part_only():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    args = parser.parse_args(["--llm-base-url", "http://127.0.0.1:1/v1", "--llm-api-key", "k", "--llm-model", "x",
                              "--elevenlabs-api-key", "tts-key"])
    settings = settings_from_args(args, environ={})
    assert settings.llm.llm_base_url == "http://127.0.0.1:1/v1" and settings.llm.llm_api_key.get_secret_value() == "k"
    assert settings.tts.api_key.get_secret_value() == "tts-key" and settings.tts.base_url == TTSConfig().base_url


def test_llm_field_names_are_unique_across_the_settings_parts():
    """`serve` flags and `Settings.load` overrides are keyed by field name: a shared name would set both."""
    llm = set(LLMConfig.model_fields)
    others = {name for part in (BridgeConfig, CacheConfig, TTSConfig) for name in part.model_fields}
    assert llm.isdisjoint(others)


def test_an_llm_dialogue_without_llm_settings_is_refused_naming_llm_base_url():
    dialogue = parse_dialogue(LLM_DIALOGUE, "calls.toml")
    with pytest.raises(ConfigError) as caught:
        require_llm_settings(dialogue, LLMConfig())
    assert caught.value.setting == "LLM_BASE_URL"
    assert "calls.toml" in str(caught.value) and "'ask'" in str(caught.value)
    require_llm_settings(dialogue, LLMConfig(llm_base_url="http://127.0.0.1:9/v1"))  # configured: fine
    require_llm_settings(parse_dialogue('start = "a"\n[nodes.a]\nplay = [ { static = "x" } ]\nhangup = true\n'),
                         LLMConfig())  # no llm items: no LLM needed
    with pytest.raises(ConfigError):
        BridgeApp(Settings.load({}), dialogue=dialogue)
