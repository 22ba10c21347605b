"""Typed speech recognition errors, classified as the TTS errors are.

The recognizer fails in the same three ways as TTS (an HTTP status with an error body, an error message on the
WebSocket, a bare close code) plus Scribe's error messages (`message_type` = `auth_error`, `rate_limited`,
...). HTTP bodies and close codes go through `voice.tts_manager.errors` (one classification for both
directions of the voice) and are mapped onto the STT classes here, so callers decide on the class alone:
`retryable` errors may succeed on a new connection or request; the others never will.
"""

from __future__ import annotations

import json
import random
from typing import Any, ClassVar

from voice.tts_manager import errors as tts

__all__ = [
    "FATAL_SCRIBE_ERRORS",
    "WARNING_SCRIBE_MESSAGES",
    "STTAuthError",
    "STTConnectionError",
    "STTError",
    "STTNotConfigured",
    "STTQuotaError",
    "STTRateLimited",
    "STTServerError",
    "STTSessionLimit",
    "STTStreamError",
    "STTValidationError",
    "error_from_close",
    "error_from_http",
    "error_from_openai_http",
    "error_from_scribe_message",
]


class STTError(Exception):
    """Base of every recognizer failure. `retryable`: a new connection or request may succeed."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None,
                 close_code: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.close_code = close_code
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = [f"HTTP {self.http_status}" if self.http_status is not None else "",
                 f"close {self.close_code}" if self.close_code is not None else "", self.code or ""]
        where = [w for w in where if w]
        return f"{self.message} ({', '.join(where)})" if where else self.message

    def retry_delay_s(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1, 2, ...): the service's Retry-After when it sent one,
        else full-jitter exponential backoff from 0.2 s (both recognizers retry alike)."""
        if self.retry_after_s is not None:
            return self.retry_after_s
        return 0.1 * 2**attempt * random.random()


class STTConnectionError(STTError):
    """No connection to the recognizer could be had (refused, DNS, TLS, handshake, timeout)."""

    retryable = True


class STTAuthError(STTError):
    """The key is missing, wrong or lacks the permission; or the account has not accepted the terms."""


class STTQuotaError(STTError):
    """The account has no quota left."""


class STTRateLimited(STTError):
    """Too many sessions, requests or commits; a later attempt may succeed."""

    retryable = True


class STTServerError(STTError):
    """The recognizer failed on its side (5xx, `transcriber_error`, `resource_exhausted`, close 1011)."""

    retryable = True


class STTValidationError(STTError):
    """What we sent is wrong: a bad parameter, audio format, chunk size or request."""


class STTStreamError(STTError):
    """The session broke after it started: a dropped socket, an unparsable message."""


class STTSessionLimit(STTError):
    """The session reached the service's time limit; a new session continues."""

    retryable = True


class STTNotConfigured(STTError):
    """A recognizer was asked for while `STT_PROVIDER=none`, or its settings are incomplete."""


_FROM_TTS: dict[type[tts.TTSError], type[STTError]] = {
    tts.TTSConnectionError: STTConnectionError,
    tts.TTSAuthError: STTAuthError,
    tts.TTSQuotaError: STTQuotaError,
    tts.TTSRateLimited: STTRateLimited,
    tts.TTSServerError: STTServerError,
    tts.TTSValidationError: STTValidationError,
    tts.TTSFormatError: STTValidationError,
    tts.TTSVoiceNotFoundError: STTValidationError,
    tts.TTSInputTimeout: STTStreamError,
    tts.TTSStreamError: STTStreamError,
}


def _translate(error: tts.TTSError, message: str) -> STTError:
    cls = next((stt for t, stt in _FROM_TTS.items() if type(error) is t), STTError)
    return cls(message, http_status=error.http_status, code=error.code, close_code=error.close_code,
               retry_after_s=error.retry_after_s)


def error_from_http(status: int, body: bytes, *, service: str = "ElevenLabs",
                    retry_after: str | None = None) -> STTError:
    """The typed error for a non-2xx answer (or a refused WebSocket upgrade) of an ElevenLabs-shaped API."""
    error = tts.error_from_http(status, body, retry_after=retry_after)
    return _translate(error, error.message.replace("ElevenLabs", service, 1))


def error_from_openai_http(status: int, body: bytes, *, retry_after: str | None = None) -> STTError:
    """The typed error for an OpenAI-shaped error answer `{"error": {"message", "type", "code"}}`."""
    text = body.decode("utf-8", "replace").strip()
    message, code = text[:300] or "no error body", None
    try:
        data: Any = json.loads(text) if text else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or message)
        code = str(err.get("code") or err.get("type") or "") or None
    elif isinstance(data, dict) and "detail" in data:  # FastAPI-based Whisper servers
        return error_from_http(status, body, service="the transcription server", retry_after=retry_after)
    cls: type[STTError]
    if status == 429:
        cls = STTQuotaError if code == "insufficient_quota" else STTRateLimited
    elif status >= 500 or status == 408:
        cls = STTServerError
    elif status in (401, 403):
        cls = STTAuthError
    elif status == 402:
        cls = STTQuotaError
    else:
        cls = STTValidationError
    return cls(f"the transcription server refused the request: {message}", http_status=status, code=code,
               retry_after_s=tts._retry_after(retry_after))


_BY_MESSAGE_TYPE: dict[str, type[STTError]] = {
    "auth_error": STTAuthError,
    "unaccepted_terms": STTAuthError,
    "unaccepted_terms_error": STTAuthError,
    "quota_exceeded": STTQuotaError,
    "rate_limited": STTRateLimited,
    "commit_throttled": STTRateLimited,
    "queue_overflow": STTRateLimited,
    "resource_exhausted": STTServerError,
    "transcriber_error": STTServerError,
    "input_error": STTValidationError,
    "invalid_request": STTValidationError,
    "chunk_size_exceeded": STTValidationError,
    "insufficient_audio_activity": STTStreamError,
    "session_time_limit_exceeded": STTSessionLimit,
    "error": STTError,
}
ERROR_MESSAGE_TYPES = frozenset(_BY_MESSAGE_TYPE)
WARNING_SCRIBE_MESSAGES = frozenset({"commit_throttled", "warning"})
"""Scribe messages that report trouble but leave the session usable: logged, not raised."""
FATAL_SCRIBE_ERRORS = ERROR_MESSAGE_TYPES - WARNING_SCRIBE_MESSAGES


def error_from_scribe_message(data: dict[str, Any]) -> STTError:
    """The typed error for a Scribe error message `{"message_type": "<kind>", "error": "..."}`."""
    kind = str(data.get("message_type") or "error")
    cls = _BY_MESSAGE_TYPE.get(kind, STTError)
    detail = str(data.get("error") or data.get("message") or kind)
    return cls(f"ElevenLabs speech-to-text error: {detail}", code=kind)


def error_from_close(close_code: int | None, reason: str = "") -> STTError:
    """The typed error for a Scribe WebSocket that closed without an error message."""
    error = tts.error_from_close(close_code, reason)
    return _translate(error, error.message.replace("ElevenLabs WebSocket", "ElevenLabs speech-to-text WebSocket"))
