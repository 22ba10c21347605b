"""Error classification (Scribe messages, HTTP bodies of both APIs, close codes) and STTConfig."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from voice.config import ConfigError, TTSConfig, load
from voice.stt import create_recognizer
from voice.stt.config import STTConfig
from voice.stt.errors import (
    STTAuthError,
    STTError,
    STTQuotaError,
    STTRateLimited,
    STTServerError,
    STTSessionLimit,
    STTStreamError,
    STTValidationError,
    error_from_close,
    error_from_http,
    error_from_openai_http,
    error_from_scribe_message,
)
from voice.stt.scribe import ScribeRealtimeRecognizer


@pytest.mark.parametrize(("kind", "cls", "retryable"), [
    ("auth_error", STTAuthError, False), ("quota_exceeded", STTQuotaError, False),
    ("rate_limited", STTRateLimited, True), ("commit_throttled", STTRateLimited, True),
    ("transcriber_error", STTServerError, True), ("resource_exhausted", STTServerError, True),
    ("input_error", STTValidationError, False), ("chunk_size_exceeded", STTValidationError, False),
    ("session_time_limit_exceeded", STTSessionLimit, True), ("unaccepted_terms", STTAuthError, False),
    ("something_new", STTError, False),
])
def test_scribe_error_messages_are_classified(kind, cls, retryable):
    error = error_from_scribe_message({"message_type": kind, "error": "details here"})
    assert type(error) is cls and error.retryable is retryable
    assert error.code == kind and "details here" in str(error)


def test_http_refusals_reuse_the_tts_classification():
    body = json.dumps({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}).encode()
    assert isinstance(error_from_http(401, body), STTAuthError)
    busy = error_from_http(429, b'{"detail": {"status": "system_busy", "message": "busy"}}', retry_after="2")
    assert isinstance(busy, STTRateLimited) and busy.retry_after_s == 2.0
    assert isinstance(error_from_http(503, b""), STTServerError)
    assert "ElevenLabs" in str(error_from_http(400, b"bad"))


def test_openai_errors_are_classified():
    def body(code, kind="invalid_request_error"):
        return json.dumps({"error": {"message": "m", "type": kind, "code": code}}).encode()

    assert isinstance(error_from_openai_http(401, body("invalid_api_key")), STTAuthError)
    assert isinstance(error_from_openai_http(429, body("rate_limit_exceeded")), STTRateLimited)
    assert isinstance(error_from_openai_http(429, body("insufficient_quota")), STTQuotaError)
    assert isinstance(error_from_openai_http(500, b"oops"), STTServerError)
    assert isinstance(error_from_openai_http(400, body(None)), STTValidationError)
    assert isinstance(error_from_openai_http(422, b'{"detail": [{"loc": ["file"], "msg": "x"}]}'),
                      STTValidationError)


def test_close_codes_are_classified():
    assert isinstance(error_from_close(None), STTStreamError)
    assert isinstance(error_from_close(1011, "internal"), STTServerError)
    assert isinstance(error_from_close(1008, "Invalid API key"), STTAuthError)


def test_config_defaults_and_environment():
    config = STTConfig()
    assert (config.stt_provider, config.stt_end_silence_ms, config.stt_max_utterance_s, config.stt_commit) == (
        "none",
        600,
        15.0,
        "manual",
    )
    loaded = load(STTConfig, {"STT_PROVIDER": "elevenlabs", "STT_LANGUAGE": "ru", "STT_END_SILENCE_MS": "500",
                              "STT_OPENAI_API_KEY": "sk-secret"})
    assert loaded.model_id == "scribe_v2_realtime" and loaded.stt_language == "ru" and loaded.stt_end_silence_ms == 500
    assert load(STTConfig, {"STT_PROVIDER": "openai"}).model_id == "whisper-1"
    assert "sk-secret" not in repr(loaded)


@pytest.mark.parametrize(("env", "name"), [
    ({"STT_PROVIDER": "google"}, "STT_PROVIDER"), ({"STT_END_SILENCE_MS": "5"}, "STT_END_SILENCE_MS"),
    ({"STT_COMMIT": "auto"}, "STT_COMMIT"), ({"STT_OPENAI_BASE_URL": "ftp://x"}, "STT_OPENAI_BASE_URL"),
    ({"STT_BASE_URL": "ws://stt:8766"}, "STT_BASE_URL"), ({"STT_BASE_URL": "http://"}, "STT_BASE_URL"),
])
def test_bad_settings_are_named(env, name):
    with pytest.raises(ConfigError, match=name):
        load(STTConfig, env)


def test_scribe_connects_to_stt_base_url_or_else_the_tts_base_url():
    """STT_BASE_URL lets Scribe live elsewhere than TTS (a second emulator); empty (the default) keeps one
    base URL for both, and the recognizer's WebSocket URL follows."""
    tts = TTSConfig(api_key=SecretStr("k"), base_url="http://tts.local:8765")
    default = load(STTConfig, {"STT_PROVIDER": "elevenlabs"})
    assert default.stt_base_url == "" and default.scribe_base_url(tts.base_url) == "http://tts.local:8765"
    own = load(STTConfig, {"STT_PROVIDER": "elevenlabs", "STT_BASE_URL": " https://stt.local:9000/ "})
    assert own.scribe_base_url(tts.base_url) == "https://stt.local:9000"
    recognizer = create_recognizer(own, tts)
    assert isinstance(recognizer, ScribeRealtimeRecognizer)
    assert recognizer.url.startswith("wss://stt.local:9000/v1/speech-to-text/realtime?")
    assert create_recognizer(default, tts).url.startswith("ws://tts.local:8765/")  # type: ignore[attr-defined]


def test_cross_field_checks_name_the_settings():
    with pytest.raises(ConfigError, match="STT_CHUNK_MS"):
        load(STTConfig, {"STT_CHUNK_MS": "50"})
    with pytest.raises(ConfigError, match="STT_BARGE_IN_MS"):
        load(STTConfig, {"STT_BARGE_IN_MS": "40", "STT_START_MS": "100"})
