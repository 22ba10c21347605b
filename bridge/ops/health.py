"""The operator's HTTP endpoint on `METRICS_PORT`: `/metrics`, `/healthz`, `/readyz`.

- `/metrics`: the Prometheus exposition of `bridge.ops.metrics.Metrics` (text format, or OpenMetrics when the
  scraper asks for it).
- `/healthz`: the process is alive and its event loop answers (a blocked loop answers nothing, which is
  what a liveness probe should see). Always 200 while it answers.
- `/readyz`: the bridge accepts calls. 200 while it does, 503 from the moment it stops (a stop signal,
  during the calls' grace period) and while admission is paused for overload (status `overloaded`: the
  media clock cannot keep its schedule, `bridge.server`). The JSON body reports the dependencies too:
  Redis (`PING` through the cache, which honours its breaker) and the TTS service (a TCP connect to
  `ELEVENLABS_BASE_URL`'s host, which costs no API request and needs no key). A failed dependency makes
  the status `degraded` but keeps 200, because the bridge degrades rather than fails (Redis down: live TTS;
  TTS down: fallback phrase);
  `/readyz?strict=1` answers 503 for a degraded bridge too, for checks that want every part up.

It runs on the bridge's own event loop: a scrape costs well under a millisecond and no call waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from bridge.config import Settings
from bridge.ops.listen import listen_sockets, metrics_address
from bridge.ops.metrics import Metrics
from voice.config import safe_url
from voice.domain.interfaces.cache import AbstractCache

__all__ = ["HealthServer", "tcp_check", "CHECK_TIMEOUT_S"]

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_S = 1.0
"""Each dependency check's time limit: a probe must answer well within a load balancer's timeout."""


async def tcp_check(host: str, port: int, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """Open and close a TCP connection: {"ok": bool, "ms": float, "error": str (when not ok)}."""
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError) as exc:
        return {"ok": False, "ms": _ms_since(started), "error": f"{type(exc).__name__}: {exc}".rstrip(": ")}
    writer.close()
    with contextlib.suppress(TimeoutError, OSError):
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    return {"ok": True, "ms": _ms_since(started)}


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme in ("https", "wss") else 80)


class HealthServer:
    """`/metrics`, `/healthz` and `/readyz` for one AudioSocket server (see the module docstring).

    `server` needs `accepting`, `calls` and `calls_total` (an `AudioSocketServer`); `cache` is the cache
    whose Redis is checked (None: the bridge runs without one, e.g. `serve --tone`, and no check is made).
    """

    def __init__(
        self,
        server: Any,
        metrics: Metrics,
        settings: Settings,
        *,
        cache: AbstractCache | None = None,
        host: str | None = None,
        port: int | None = None,
        check_tts: bool = True,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        self.server = server
        self.metrics = metrics
        self.settings = settings
        self.cache = cache
        self.host = host or settings.bridge.metrics_host or settings.bridge.host
        self.requested_port = settings.bridge.metrics_port if port is None else port
        self.check_tts = check_tts
        self.started_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.sockets: list[socket.socket] = list(sockets or [])
        """Listening sockets: bound by `bind` (or given, e.g. by the supervisor of `serve --workers N`)."""
        self._where = (metrics_address(settings.bridge) if host is None and port is None
                       else [("metrics host", self.host), ("metrics port", self.requested_port)])

    def bind(self) -> None:
        """Bind the metrics port (not answering yet: a scrape waits until `start`).

        Raises `ListenError` naming METRICS_HOST (or BRIDGE_HOST) and METRICS_PORT.
        """
        if not self.sockets:
            self.sockets = listen_sockets(self.host, self.requested_port, self._where)

    async def start(self) -> None:
        """Answer on the metrics port (binding it first when `bind` was not called)."""
        self.bind()
        app = web.Application()
        app.add_routes([
            web.get("/metrics", self._metrics),
            web.get("/healthz", self._healthz),
            web.get("/readyz", self._readyz),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        for sock in self.sockets:
            await web.SockSite(self._runner, sock).start()
        log.info("metrics_listening", url=self.url, paths=["/metrics", "/healthz", "/readyz"])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if not self.sockets:
            raise RuntimeError("the health server is not started")
        return int(self.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- handlers -----------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.metrics.registry), headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive", "uptime_s": round(time.monotonic() - self.started_at, 1),
                      "calls": len(self.server.calls)}, 200)

    async def _readyz(self, request: web.Request) -> web.Response:
        report = await self.readiness()
        strict = request.query.get("strict", "").lower() in ("1", "true", "yes")
        ok = report["ready"] and (report["status"] == "ok" or not strict)
        return _json(report, 200 if ok else 503)

    async def readiness(self) -> dict[str, Any]:
        """What `/readyz` answers: accepting calls or not, and each dependency's check."""
        names, checks = [], []
        if self.cache is not None:
            names.append("redis")
            checks.append(self._redis_check())
        if self.check_tts:
            names.append("tts")
            checks.append(self._tts_check())
        results = dict(zip(names, await asyncio.gather(*checks), strict=True))
        accepting = bool(self.server.accepting)
        overloaded = bool(getattr(self.server, "overloaded", False))
        if not accepting:
            status = "stopping"
        elif overloaded:
            status = "overloaded"
        else:
            status = "ok" if all(r["ok"] for r in results.values()) else "degraded"
        return {
            "ready": accepting and not overloaded,
            "status": status,
            "accepting": accepting,
            "overloaded": overloaded,
            "calls": len(self.server.calls),
            "calls_total": self.server.calls_total,
            "checks": results,
        }

    async def _redis_check(self) -> dict[str, Any]:
        started = time.monotonic()
        target = safe_url(getattr(getattr(self.cache, "config", None), "redis_url", "")) or None
        try:
            ok = bool(await asyncio.wait_for(self.cache.ping(), CHECK_TIMEOUT_S))  # type: ignore[union-attr]
            error = None if ok else "no answer to PING (or skipped while the cache's breaker is open)"
        except TimeoutError:
            ok, error = False, f"PING took over {CHECK_TIMEOUT_S} s"
        result: dict[str, Any] = {"ok": ok, "ms": _ms_since(started), "target": target}
        if error:
            result["error"] = error
        return result

    async def _tts_check(self) -> dict[str, Any]:
        host, port = _host_port(self.settings.tts.base_url)
        result = await tcp_check(host, port)
        result["target"] = f"{host}:{port}"
        return result


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
