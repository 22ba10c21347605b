"""Typed TTS errors, and the one place where ElevenLabs' error signals are classified.

The provider reports trouble three ways: an HTTP status with a JSON body keyed on `detail.status`, a
WebSocket error frame `{"message", "error", "code"}`, and a bare WebSocket close code. All three map to the
classes below, so callers decide on the class alone: `retryable` errors (rate limiting, server trouble, a
connection that could not be had) may be tried again before any audio was played; the others never will
succeed by repeating the same request.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

__all__ = [
    "TTSError",
    "TTSConnectionError",
    "TTSAuthError",
    "TTSQuotaError",
    "TTSVoiceNotFoundError",
    "TTSFormatError",
    "TTSValidationError",
    "TTSRateLimited",
    "TTSServerError",
    "TTSStreamError",
    "TTSInputTimeout",
    "error_from_http",
    "error_from_ws_frame",
    "error_from_close",
]


class TTSError(Exception):
    """Base of every TTS failure. `retryable` says whether the same request may succeed later."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        close_code: int | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.close_code = close_code
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = []
        if self.http_status is not None:
            where.append(f"HTTP {self.http_status}")
        if self.close_code is not None:
            where.append(f"close {self.close_code}")
        if self.code:
            where.append(self.code)
        return f"{self.message} ({', '.join(where)})" if where else self.message


class TTSConnectionError(TTSError):
    """No connection to the provider could be had (refused, DNS, TLS, handshake, timeout before audio)."""

    retryable = True


class TTSAuthError(TTSError):
    """The API key is missing, wrong, or lacks the permission (401 `invalid_api_key`, 403, WS 1008)."""


class TTSQuotaError(TTSError):
    """The account has no characters left (401 `quota_exceeded`)."""


class TTSVoiceNotFoundError(TTSError):
    """The configured voice id does not exist (404 `voice_not_found`)."""


class TTSFormatError(TTSError):
    """The output format is unknown or not allowed for this plan (422/403 on `output_format`)."""


class TTSValidationError(TTSError):
    """The request itself is wrong: empty or too long text, bad field (400, 422)."""


class TTSRateLimited(TTSError):
    """Too many concurrent requests or the system is busy (429); retry with backoff."""

    retryable = True


class TTSServerError(TTSError):
    """The provider failed (5xx, WebSocket 1011); retry with backoff."""

    retryable = True


class TTSStreamError(TTSError):
    """The stream broke after it started: truncated body, dropped socket (1006), bad or oversized message."""


class TTSInputTimeout(TTSStreamError):
    """The server closed the WebSocket because no text came in time (`input_timeout_exceeded`, 1008)."""


# --- classification -----------------------------------------------------------------------------------

_BY_CODE: dict[str, type[TTSError]] = {
    "invalid_api_key": TTSAuthError,
    "needs_authorization": TTSAuthError,
    "unauthorized": TTSAuthError,
    "auth_error": TTSAuthError,
    "missing_permissions": TTSAuthError,
    "quota_exceeded": TTSQuotaError,
    "payment_required": TTSQuotaError,
    "voice_not_found": TTSVoiceNotFoundError,
    "invalid_output_format": TTSFormatError,
    "unsupported_output_format": TTSFormatError,
    "output_format_not_allowed": TTSFormatError,
    "max_character_limit_exceeded": TTSValidationError,
    "invalid_input_message": TTSValidationError,
    "validation_error": TTSValidationError,
    "too_many_concurrent_requests": TTSRateLimited,
    "system_busy": TTSRateLimited,
    "rate_limit_exceeded": TTSRateLimited,
    "internal_error": TTSServerError,
    "internal_server_error": TTSServerError,
    "input_timeout_exceeded": TTSInputTimeout,
}


def _parse_detail(body: bytes) -> tuple[str | None, str]:
    """(`detail.status` or a synthetic code, a human message) from an error body of any shape."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None, text[:300] or "no error body"
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        code = detail.get("status") or detail.get("code")
        return (str(code) if code else None), str(detail.get("message") or detail)
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ..., "type": ...}]
        parts = []
        format_error = False
        for item in detail[:5]:
            if not isinstance(item, dict):
                continue
            loc = ".".join(str(p) for p in item.get("loc", []))
            format_error = format_error or "output_format" in loc
            parts.append(f"{loc}: {item.get('msg', item)}")
        return ("invalid_output_format" if format_error else "validation_error"), "; ".join(parts) or text[:300]
    if isinstance(detail, str):
        return None, detail
    return None, text[:300]


def error_from_http(
    status: int,
    body: bytes,
    *,
    request_id: str | None = None,
    retry_after: str | None = None,
) -> TTSError:
    """The typed error for a non-200 answer of the HTTP API."""
    code, message = _parse_detail(body)
    cls: type[TTSError]
    if code in _BY_CODE and status not in (429,) and status < 500:
        cls = _BY_CODE[code]
    elif status == 429:
        cls = TTSRateLimited
    elif status >= 500 or status == 408:
        cls = TTSServerError
    elif status == 401:
        cls = TTSAuthError
    elif status == 402:
        cls = TTSQuotaError
    elif status == 403:
        cls = TTSFormatError if "format" in f"{code} {message}".lower() else TTSAuthError
    elif status == 404:
        cls = TTSVoiceNotFoundError if "voice" in f"{code} {message}".lower() else TTSValidationError
    elif status in (400, 413, 422):
        cls = TTSValidationError
    else:
        cls = TTSError
    return cls(
        f"ElevenLabs refused the request: {message}",
        http_status=status,
        code=code,
        request_id=request_id,
        retry_after_s=_retry_after(retry_after),
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_ws_frame(frame: dict[str, Any]) -> TTSError:
    """The typed error for a WebSocket error frame `{"message": ..., "error": ..., "code": <close code>}`."""
    code = str(frame.get("error") or "") or None
    message = str(frame.get("message") or code or "error frame without a message")
    close_code = frame.get("code") if isinstance(frame.get("code"), int) else None
    cls = _BY_CODE.get(code or "")
    if cls is None:
        cls = _class_for_close(close_code or 0, message)
    return cls(f"ElevenLabs WebSocket error: {message}", code=code, close_code=close_code)


def error_from_close(close_code: int | None, reason: str = "", *, sent_code: int | None = None) -> TTSError:
    """The typed error for a WebSocket that closed without an error frame.

    `close_code` is what the server sent (None when the connection dropped without a close frame: 1006);
    `sent_code` is what this side sent, which matters for 1009 (a message over `max_size`).
    """
    if sent_code == 1009 or close_code == 1009:
        return TTSStreamError(
            "ElevenLabs sent a message larger than the client's max_size", close_code=1009, code="message_too_big"
        )
    if close_code is None or close_code == 1006:
        return TTSStreamError("the ElevenLabs WebSocket dropped without a close frame", close_code=1006)
    cls = _class_for_close(close_code, reason)
    text = f"the ElevenLabs WebSocket closed with {close_code}"
    return cls(f"{text}: {reason}" if reason else text, close_code=close_code)


def _class_for_close(close_code: int, reason: str) -> type[TTSError]:
    lowered = reason.lower()
    if close_code == 1008:
        if "api key" in lowered or "api_key" in lowered or "unauthori" in lowered:
            return TTSAuthError
        if "quota" in lowered:
            return TTSQuotaError
        if "timeout" in lowered or "not received a new text" in lowered:
            return TTSInputTimeout
        return TTSStreamError
    if close_code in (1011, 1012, 1014):
        return TTSServerError
    if close_code == 1013:
        return TTSRateLimited
    return TTSStreamError
