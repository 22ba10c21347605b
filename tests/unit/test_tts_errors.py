"""Classification of ElevenLabs' error signals: HTTP bodies, WebSocket error frames, bare close codes."""

from __future__ import annotations

import json

import pytest

from voice.config import TTSConfig
from voice.tts_manager import TTSManager, WebSocketConnectionManager
from voice.tts_manager.errors import (
    TTSAuthError,
    TTSError,
    TTSFormatError,
    TTSInputTimeout,
    TTSQuotaError,
    TTSRateLimited,
    TTSServerError,
    TTSStreamError,
    TTSValidationError,
    TTSVoiceNotFoundError,
    error_from_close,
    error_from_http,
    error_from_ws_frame,
)


def body(status: str, message: str = "m") -> bytes:
    return json.dumps({"detail": {"status": status, "message": message}}).encode()


@pytest.mark.parametrize(
    "status, raw, cls, code",
    [
        (401, body("invalid_api_key"), TTSAuthError, "invalid_api_key"),
        (401, body("quota_exceeded"), TTSQuotaError, "quota_exceeded"),
        (404, body("voice_not_found"), TTSVoiceNotFoundError, "voice_not_found"),
        (403, body("missing_permissions"), TTSAuthError, "missing_permissions"),
        (403, body("output_format_not_allowed"), TTSFormatError, "output_format_not_allowed"),
        (400, body("max_character_limit_exceeded"), TTSValidationError, "max_character_limit_exceeded"),
        (422, json.dumps({"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]}).encode(),
         TTSValidationError, "validation_error"),
        (422, json.dumps({"detail": [{"loc": ["query", "output_format"], "msg": "bad", "type": "enum"}]}).encode(),
         TTSFormatError, "invalid_output_format"),
        (429, body("system_busy"), TTSRateLimited, "system_busy"),
        (500, b"<html>Internal Server Error</html>", TTSServerError, None),
        (503, b"", TTSServerError, None),
        (418, b"teapot", TTSError, None),
    ],
)
def test_http_errors_are_classified_by_detail_status(status, raw, cls, code):
    error = error_from_http(status, raw, request_id="r1")
    assert type(error) is cls and error.code == code and error.http_status == status
    assert error.request_id == "r1"
    assert error.retryable == (status in (429, 500, 503))
    assert str(status) in str(error)


def test_retry_after_is_read_and_bad_values_ignored():
    assert error_from_http(429, b"", retry_after="1.5").retry_after_s == 1.5
    assert error_from_http(429, b"", retry_after="soon").retry_after_s is None
    assert error_from_http(429, b"", retry_after="-3").retry_after_s is None


def test_a_non_json_body_is_quoted_in_the_message():
    error = error_from_http(502, b"Bad Gateway from the proxy")
    assert "Bad Gateway from the proxy" in str(error)


@pytest.mark.parametrize(
    "frame, cls",
    [
        ({"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}, TTSAuthError),
        ({"message": "Have not received a new text input", "error": "input_timeout_exceeded", "code": 1008},
         TTSInputTimeout),
        ({"message": "Could not parse", "error": "invalid_input_message", "code": 1008}, TTSValidationError),
        ({"message": "boom", "error": "something_new", "code": 1011}, TTSServerError),
        ({"message": "odd", "error": "something_new", "code": 1008}, TTSStreamError),
        ({"message": "busy", "error": "too_many_concurrent_requests", "code": 1008}, TTSRateLimited),
    ],
)
def test_ws_error_frames_are_typed(frame, cls):
    error = error_from_ws_frame(frame)
    assert type(error) is cls and error.code == frame["error"] and error.close_code == frame["code"]
    assert frame["message"] in str(error)


@pytest.mark.parametrize(
    "code, reason, sent, cls",
    [
        (None, "", None, TTSStreamError),
        (1006, "", None, TTSStreamError),
        (1008, "Invalid API key", None, TTSAuthError),
        (1008, "Have not received a new text input within the timeout of 20 seconds.", None, TTSInputTimeout),
        (1008, "something else", None, TTSStreamError),
        (1011, "internal", None, TTSServerError),
        (1013, "try again later", None, TTSRateLimited),
        (None, "", 1009, TTSStreamError),
    ],
)
def test_bare_close_codes_are_typed(code, reason, sent, cls):
    error = error_from_close(code, reason, sent_code=sent)
    assert type(error) is cls
    assert error.close_code == (1009 if sent == 1009 else code or 1006)


async def test_a_missing_api_key_fails_before_any_request():
    config = TTSConfig(api_key="", base_url="http://127.0.0.1:9")
    tts = TTSManager(config, WebSocketConnectionManager(config))
    with pytest.raises(TTSAuthError, match="ELEVENLABS_API_KEY"):
        async for _ in tts.stream_static_text("hello"):
            pass
    with pytest.raises(TTSAuthError, match="ELEVENLABS_API_KEY"):
        await tts.start_llm_stream()
