"""Logging set-up: structlog events, JSON or console, call context bound once and carried everywhere.

Modules log with `structlog.get_logger(__name__)` and bind context (`log.bind(call=uuid, peer=...)`);
only the application entry points call `configure_logging` (`bridge.cli` does it for every subcommand).
A call's handler also binds its UUID in the task's context variables, so lines logged by the voice side
on the call's behalf (a synthesis, a cache write) carry it as well.

Secrets never reach a line. Three layers, because one is never enough:
1. a value under a key that names a secret (`api_key`, `password`, ...) is replaced by `***`;
2. every value registered with `register_secret` (the API keys and Redis passwords of the settings, at
   start-up) is masked wherever it appears in a string, nested dicts and lists included;
3. the rendered line itself is masked again, which catches what was rendered from an object (an exception,
   a request) rather than logged as a string.
Third-party libraries log through the standard `logging` module; their records are rendered by the same
chain (same format, same masking).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Protocol, TextIO, cast
from urllib.parse import unquote, urlsplit

import structlog
from pydantic import BaseModel, SecretStr

from voice.config import env_name, safe_url

__all__ = ["configure_logging", "register_secret", "register_settings_secrets", "register_environment_secrets",
           "settings_for_log", "redact_secrets", "mask", "MASK"]

MASK = "***"
_SECRET_KEYS = {"api_key", "xi_api_key", "xi-api-key", "authorization", "password", "token", "llm_api_key",
                "secret"}
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words; key-based masking still covers them
_secret_values: set[str] = set()
_QUIET_LIBRARIES = ("httpx", "httpcore", "websockets", "aiohttp.access", "hpack")
"""Libraries whose INFO lines (one per HTTP request) would drown the bridge's own: WARNING and up only."""


def register_secret(value: str) -> None:
    """Any log value containing `value` is masked from now on (API keys, passwords in URLs).

    The forms a secret takes when it is printed are registered too: percent-decoded (a password in a URL)
    and JSON-escaped (the JSON renderer escapes quotes, backslashes and non-ASCII characters).
    """
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    for form in {value, unquote(value)}:
        _secret_values.add(form)
        _secret_values.add(json.dumps(form)[1:-1])


def mask(text: str) -> str:
    """`text` with every registered secret replaced by `***`: for messages printed outside the logs."""
    return _mask(text) if _secret_values else text


def _mask(value: str) -> str:
    for secret in _secret_values:
        if secret in value:
            value = value.replace(secret, MASK)
    return value


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _mask(value) if _secret_values else value
    if isinstance(value, dict):
        return {k: (_masked(v) if isinstance(k, str) and k.lower() in _SECRET_KEYS else _redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v) for v in value) if not hasattr(value, "_fields") else value
    return value


def _masked(value: Any) -> Any:
    """A value under a secret's key: `***`, unless there is nothing to hide (an unset key stays visibly unset)."""
    return value if value is None or value == "" else MASK


def redact_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret ever reaches a log line, by key or by value."""
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = _masked(value)
        else:
            event[key] = _redact(value)
    return event


def _mask_rendered(_logger: object, _name: str, line: Any) -> Any:
    """Last processor: mask the rendered line (what was rendered from objects, e.g. an exception's repr)."""
    return _mask(line) if isinstance(line, str) and _secret_values else line


# --- settings ---------------------------------------------------------------------------------------------


def _url_password(value: str) -> str | None:
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def register_settings_secrets(config: BaseModel) -> None:
    """Register every secret a settings model holds: its `SecretStr` values, and passwords in URLs.

    Walks the parts of a composed model too, so a setting added later is covered as soon as it is a SecretStr.
    """
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            register_settings_secrets(value)
        elif isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif isinstance(value, str):
            password = _url_password(value)
            if password:
                register_secret(password)


def register_environment_secrets(environ: Mapping[str, str], secret_names: Iterable[str]) -> None:
    """Register the values of the named secret variables, and any password inside a URL-valued variable."""
    for name in secret_names:
        register_secret(environ.get(name, ""))
    for value in environ.values():
        if isinstance(value, str):
            password = _url_password(value)
            if password:
                register_secret(password)


def settings_for_log(config: BaseModel) -> dict[str, Any]:
    """{ENV_NAME: value} of a settings model (parts flattened): what a server really runs with, safe to share.

    A secret shows as `***` when set and as null when unset, the same for every key; a password in a URL
    as `***`.
    """
    out: dict[str, Any] = {}
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            out.update(settings_for_log(value))
            continue
        if isinstance(value, SecretStr):
            value = MASK if value.get_secret_value() else None
        elif isinstance(value, str):
            value = safe_url(value) if _url_password(value) else value
        elif isinstance(value, tuple):
            value = list(value)
        out[env_name(name, field)] = value
    return out


# --- set-up -----------------------------------------------------------------------------------------------


class _ReadableConsole:
    """structlog's console renderer, except that a line too long to read on a terminal (the start-up
    `settings` line has some sixty fields) is broken into its head and one `key=value` per indented line."""

    WIDTH = 200
    HEAD = ("timestamp", "level", "event", "logger", "logger_name", "call", "peer", "worker", "pid")

    def __init__(self) -> None:
        self._inner = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> str:
        line = self._inner(logger, name, dict(event))
        if len(line) <= self.WIDTH or "exception" in event or "exc_info" in event:
            return line
        head = {k: v for k, v in event.items() if k in self.HEAD}
        rest = sorted(((k, v) for k, v in event.items() if k not in self.HEAD), key=lambda kv: kv[0])
        fields = [f"    {k}={v if isinstance(v, str) else repr(v)}" for k, v in rest]
        return "\n".join([self._inner(logger, name, head).rstrip(), *fields])


class LogStream(Protocol):
    """Where log lines go: stderr, a test's buffer, or a worker's line-atomic stream (bridge.ops.workers)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


class _Stderr:
    """`sys.stderr` as it is when a line is written, not when logging was configured (a caller that swaps
    it, such as a test harness capturing output, must not leave the logs writing to a closed stream)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(level: str = "info", fmt: str = "auto", stream: LogStream | None = None) -> None:
    """One format for every line of the process: structlog's and the standard library's.

    `fmt`: json, console, or auto (console when `stream` is a terminal, else JSON). Default stream: stderr.
    """
    out: LogStream = stream or _Stderr()
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = _ReadableConsole() if fmt == "console" else structlog.processors.JSONRenderer()
    numeric_level = getattr(logging, level.upper())
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
            _mask_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),  # it only writes and flushes
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(numeric_level, out, renderer, timestamper)


def _configure_stdlib(level: int, stream: LogStream, renderer: Any, timestamper: Any) -> None:
    """Route the standard library's records (asyncio, aiohttp, httpx, websockets) through the same chain."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
            _mask_rendered,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler._voice_bridge = True  # type: ignore[attr-defined]  # ours: replaced, never stacked
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_voice_bridge", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
