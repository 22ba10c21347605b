"""What the project's local emulators (ElevenLabs, the OpenAI-compatible LLM) share: run-time knobs checked
by type, the `/_emulator/*` control endpoints, and serving an aiohttp app on a bound socket.

Tests drive an emulator in-process or as a separate process; the control endpoints make both the same.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import structlog
from aiohttp import web

from voice.config import ConfigError, EnvSettings, LogSettings


class KnobsBase:
    """Base of a dataclass of knobs: `update()` checks every value against its field's current type."""

    MINIMUMS: ClassVar[dict[str, int]] = {}  # integer knobs with a lower bound

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from a mapping; ValueError names the first bad one and nothing is changed."""
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if name not in names:
                raise ValueError(f"unknown knob {name!r}; knobs are {', '.join(sorted(names))}")
            checked[name] = self._check(name, getattr(self, name), value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def update_json(self, text: str | None) -> None:
        """Apply a CLI's `--knobs '{"name": value, ...}'` (nothing when empty)."""
        if not text:
            return
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError("--knobs must be a JSON object")
        self.update(values)

    def _check(self, name: str, current: Any, value: Any) -> Any:
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"knob {name} must be true or false, got {value!r}")
            return value
        if isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"knob {name} must be a whole number, got {value!r}")
            if name in self.MINIMUMS and value < self.MINIMUMS[name]:
                raise ValueError(f"knob {name} must be at least {self.MINIMUMS[name]}, got {value}")
            return value
        if isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"knob {name} must be a number >= 0, got {value!r}")
            return float(value)
        if isinstance(current, str):
            if not isinstance(value, str):
                raise ValueError(f"knob {name} must be a string, got {value!r}")
            return value
        if isinstance(current, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"knob {name} must be a list of strings, got {value!r}")
            return list(value)
        if isinstance(current, dict):
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in value.items()):
                raise ValueError(f"knob {name} must be an object of strings, got {value!r}")
            return dict(value)
        raise ValueError(f"knob {name} cannot be set")  # pragma: no cover


class ControlEndpoints:
    """`GET /_emulator/stats`, `GET|POST /_emulator/knobs`, `POST /_emulator/reset`, run-time knobs and
    `async with` for an emulator that has `stats.snapshot()`, `knobs` (a KnobsBase with `fail_count`),
    `start()`, `stop()` and `reset()`."""

    stats: Any
    knobs: Any
    host: str
    port: int
    _fail_left: int

    @property
    def url(self) -> str:  # pragma: no cover - provided by the emulator
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Any:  # pragma: no cover - the emulator's
        raise NotImplementedError

    async def stop(self) -> None:  # pragma: no cover - provided by the emulator
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - provided by the emulator
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        return await self.start(self.host, self.port)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_until_signalled(self, host: str, port: int) -> None:
        """The CLI's life: start, print `listening on URL` (what a parent process waits for on stdout),
        serve until SIGINT or SIGTERM, stop."""
        await self.start(host, port)
        print(f"listening on {self.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()

    def set_knobs(self, **values: Any) -> None:
        """Change knobs at run time; setting `fail_status` or `fail_count` restarts the failure count."""
        self.knobs.update(values)
        if "fail_status" in values or "fail_count" in values:
            self._fail_left = self.knobs.fail_count

    def control_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_emulator/stats", self._get_stats),
            web.get("/_emulator/knobs", self._get_knobs),
            web.post("/_emulator/knobs", self._post_knobs),
            web.post("/_emulator/reset", self._post_reset),
        ]

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot())

    async def _get_knobs(self, request: web.Request) -> web.Response:
        return web.json_response(self.knobs.as_dict())

    async def _post_knobs(self, request: web.Request) -> web.Response:
        try:
            values = await request.json()
            if not isinstance(values, dict):
                raise ValueError("send a JSON object of knob values")
            self.set_knobs(**values)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.knobs.as_dict())

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


async def serve_app(app: web.Application, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Serve `app` on `host:port` (0 = a free port); returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        await runner.cleanup()
        raise
    sock.setblocking(False)
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner, sock.getsockname()[1]


def configure_stderr_logs(level: str | None) -> None:
    """Logs to stderr for an emulator's `python -m` (`voice-bridge` configures them itself; `voice/` cannot use
    the bridge's set-up). `level` (the --log-level flag) wins over LOG_LEVEL; a bad LOG_LEVEL is a ConfigError.
    stdout stays for the "listening on URL" line that a parent process waits for."""
    level = level or LogSettings.load().log_level
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
    )


def port_flag(settings: type[EnvSettings]) -> Callable[[str], int]:
    """The argparse type of an emulator's --port: checked as its port variable is (`settings`, a model with
    a `port` field), with an error that names the flag."""

    def parse(raw: str) -> int:
        try:
            port: int = settings.load({}, port=raw).port  # type: ignore[attr-defined]
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None
        return port

    return parse
