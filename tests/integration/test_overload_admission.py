"""Overload admission on a real server: a late media clock stops the listening, the call already up goes on.

The lateness is real: the test blocks the server's event loop in short stretches (as a saturated core
would), so the clock's wake-ups run late; the rule's thresholds are lowered so that one call is enough.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import BridgeConfig, Settings
from bridge.ops.health import HealthServer
from bridge.ops.metrics import Metrics
from bridge.overload import OverloadDetector, OverloadRule
from bridge.server import AudioSocketServer, tone_handler
from bridge.sim.caller import place_call

RULE = OverloadRule(late_s=0.010, window_s=0.3, enter_fraction=0.2, exit_fraction=0.02, calm_s=0.5,
                    min_samples=5, min_calls=1)


async def hog(stop: asyncio.Event, block_s: float = 0.03, gap_s: float = 0.01) -> None:
    """Keep the event loop busy most of the time, as more calls than the core can pace would."""
    while not stop.is_set():
        time.sleep(block_s)
        await asyncio.sleep(gap_s)


async def readyz(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url + "/readyz") as response:
        return response.status, await response.json()


async def overloaded_gauge(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "voicebridge_overloaded"]
    return family.samples[0].value


async def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_late_clock_pauses_admission_and_calm_resumes_it() -> None:
    config = BridgeConfig().model_copy(update={"host": "127.0.0.1", "port": 0})
    metrics = Metrics()
    server = AudioSocketServer(config, tone_handler(400), metrics=metrics, overload=OverloadDetector(RULE))
    await server.start()
    port = server.port
    health = HealthServer(server, metrics, Settings(), host="127.0.0.1", port=0, check_tts=False)
    await health.start()
    stop_hog = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await readyz(session, health.url)
            assert status == 200 and body["overloaded"] is False

            first = asyncio.create_task(place_call("127.0.0.1", port, duration_s=4.0, max_wait_s=20))
            await wait_for(lambda: len(server.clock) == 1, 5, "the call on the clock")
            hogging = asyncio.create_task(hog(stop_hog))
            await wait_for(lambda: server.overloaded, 5, "admission paused")

            # nothing listens: the kernel refuses the connect, as Asterisk's channel driver would see it
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            status, body = await readyz(session, health.url)
            assert status == 503 and body["status"] == "overloaded" and body["accepting"] is True
            assert await overloaded_gauge(session, health.url) == 1
            assert server.port == port

            stop_hog.set()
            await hogging
            await wait_for(lambda: not server.overloaded, 5, "admission resumed")
            await wait_for(lambda: server._server is not None, 5, "listening again")
            second = await place_call("127.0.0.1", port, duration_s=0.3, max_wait_s=10)
            assert second.error is None and second.hangup == "caller" and second.frames > 5
            status, body = await readyz(session, health.url)
            assert status == 200 and body["status"] == "ok"
            assert await overloaded_gauge(session, health.url) == 0

            report = await first
            # the call that was up all along was never cut: it ended when its caller hung up
            assert report.error is None and report.hangup == "caller"
            assert report.frames > 100
    finally:
        stop_hog.set()
        await health.stop()
        await server.stop(0)


async def test_overload_admission_is_off_when_the_setting_is_zero() -> None:
    config = BridgeConfig().model_copy(update={"host": "127.0.0.1", "port": 0, "overload_late_ms": 0})
    server = AudioSocketServer(config)
    assert server.overload is None and server.clock.on_wake is None
    config = BridgeConfig().model_copy(update={"host": "127.0.0.1", "port": 0})
    server = AudioSocketServer(config)
    assert server.overload is not None
    assert server.overload.rule.late_s == pytest.approx(0.010) and server.overload.rule.min_calls == 50


class _Transport:
    """A connection the listening socket accepted in the instant the pause began."""

    def __init__(self) -> None:
        self.aborted = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True


async def test_a_connection_accepted_as_the_pause_begins_is_closed_and_counted() -> None:
    from bridge.call import Call

    config = BridgeConfig().model_copy(update={"host": "127.0.0.1", "port": 0})
    metrics = Metrics()
    rule = OverloadRule(min_samples=5, min_calls=0, calm_s=0.2, enter_buckets=1)  # paused by 10 late wake-ups
    server = AudioSocketServer(config, metrics=metrics, overload=OverloadDetector(rule))
    await server.start()
    try:
        assert server.clock.on_wake is not None
        now = time.monotonic()
        for k in range(10):  # the clock's wake-ups, each 50 ms late
            server.clock.on_wake(now + k * 0.002, 0.05)
        assert server.overloaded
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        transport = _Transport()
        call = Call(server)
        call.connection_made(transport)  # type: ignore[arg-type]
        assert transport.aborted and call.ended and call.hangup_by == "rejected"
        assert metrics.calls_rejected.labels(reason="overload")._value.get() == 1
        assert not server.connections
        await wait_for(lambda: not server.overloaded, 5, "admission resumed (no wake-ups: calm)")
        await wait_for(lambda: server._server is not None, 5, "listening again")
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()
    finally:
        await server.stop(0)
