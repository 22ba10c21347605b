"""Logging set-up: structlog events, JSON or console, call context bound once and carried everywhere.

Modules log with `structlog.get_logger(__name__)` and bind context (`log.bind(call=uuid, peer=...)`);
only the application entry points call `configure_logging`.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SECRET_KEYS = {"api_key", "xi_api_key", "xi-api-key", "authorization", "password", "token", "llm_api_key"}
_secret_values: set[str] = set()


def register_secret(value: str) -> None:
    """Any log value containing `value` is masked from now on (API keys, passwords in URLs)."""
    if value and len(value) >= 4:
        _secret_values.add(value)


def _mask(value: str) -> str:
    for secret in _secret_values:
        if secret in value:
            value = value.replace(secret, "***")
    return value


def redact_secrets(_logger: object, _name: str, event: dict) -> dict:
    """structlog processor: no secret ever reaches a log line, by key or by value."""
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
        elif isinstance(value, str) and _secret_values:
            event[key] = _mask(value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream=None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer = structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
