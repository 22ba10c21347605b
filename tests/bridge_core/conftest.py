"""Fixtures for the bridge core: a real AudioSocket server on a free loopback port, and helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bridge.config import BridgeConfig
from bridge.server import AudioSocketServer, Handler
from bridge.sim.caller import CallReport, place_call

StartServer = Callable[..., Awaitable[AudioSocketServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """`await start_server(handler=None, **config_overrides)` -> a started server, stopped after the test."""
    servers: list[AudioSocketServer] = []

    async def start(handler: Handler | None = None, **overrides) -> AudioSocketServer:
        config = BridgeConfig().model_copy(update=dict(host="127.0.0.1", port=0, **overrides))
        server = AudioSocketServer(config, handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0)


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
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def uuid_message(call_uuid: uuid.UUID | None = None) -> bytes:
    from bridge.protocol import encode_uuid

    return encode_uuid(call_uuid or uuid.uuid4())
