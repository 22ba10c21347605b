"""Small helpers for tests that place calls on a real AudioSocket server."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from typing import Any

from bridge.config import BridgeConfig
from bridge.protocol import encode_uuid
from bridge.server import AudioSocketServer, Handler
from bridge.sim.caller import CallReport, place_call


async def normal_call(server: AudioSocketServer, duration_s: float = 0.4) -> CallReport:
    """A short well-behaved call; asserts it was served normally (paced silence, ended by the caller)."""
    report = await place_call("127.0.0.1", server.port, duration_s=duration_s, max_wait_s=duration_s + 10)
    assert report.error is None, report.error
    assert report.hangup == "caller"
    expected = duration_s / 0.02
    assert report.frames >= expected * 0.6, f"only {report.frames} frames in {duration_s} s"
    assert report.bytes == report.frames * 320
    return report


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def uuid_message(call_uuid: uuid.UUID | None = None) -> bytes:
    return encode_uuid(call_uuid or uuid.uuid4())


async def serve_handler(handler: Handler | None, *, native_tick: bool = True) -> AudioSocketServer:
    """A started server on a free loopback port with `handler` for every call (the caller stops it);
    `native_tick=False` paces its calls with the pure-Python outlet."""
    server = AudioSocketServer(BridgeConfig(host="127.0.0.1", port=0, native_tick=native_tick), handler)
    await server.start()
    return server


async def call_handler(handler: Handler | None, duration_s: float | None, *, native_tick: bool = True,
                       **kwargs: Any) -> tuple[CallReport, AudioSocketServer]:
    """One call placed on a server of its own running `handler`; the report and the (stopped) server."""
    server = await serve_handler(handler, native_tick=native_tick)
    try:
        report = await place_call("127.0.0.1", server.port, duration_s=duration_s, **{"max_wait_s": 10, **kwargs})
    finally:
        await server.stop(0)
    return report, server


async def call_through_a_burst(server: AudioSocketServer, waves: int = 6, per_wave: int = 500) -> CallReport:
    """A 2 s call placed while `waves` x `per_wave` connections open and close at once (a third send
    nothing, a third a partial UUID, a third a whole call that hangs up at once); its report once the burst
    is cleaned up."""
    during = asyncio.create_task(place_call("127.0.0.1", server.port, duration_s=2.0))
    # established before the burst: a call still connecting amid 500 silent connections may be one the
    # pending bound (BRIDGE_MAX_PENDING) closes to make room
    await wait_until(lambda: bool(server.calls), 5, "the ongoing call")
    rng = random.Random(5)

    async def open_and_close(i: int) -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        kind = i % 3
        if kind == 1:
            writer.write(uuid_message()[: rng.randrange(1, 19)])  # a partial UUID
        elif kind == 2:
            writer.write(uuid_message())  # a whole call that hangs up at once
        await asyncio.sleep(0)
        writer.close()

    for _ in range(waves):
        await asyncio.gather(*(open_and_close(i) for i in range(per_wave)))
    await wait_until(lambda: len(server.connections) <= 1, 20, "burst cleanup")
    return await during
