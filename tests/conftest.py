"""The fixtures every part of the suite shares: the private Redis (never a developer's own), free ports, the
emulators (ElevenLabs TTS, its STT, the OpenAI-compatible LLM), a real AudioSocket server, captured log
events, and the one logging reset.

Under pytest-xdist each worker is its own process, so the session Redis is one per worker: a test that
flushes it (every `redis_url` does) never touches another worker's data. Helpers that are not fixtures
live in `tests/support/` (the `serve` wrapper is `support.process.ServeProcess`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import pytest
import redis
import structlog
from structlog.testing import capture_logs

from bridge.config import BridgeConfig
from bridge.ops import logs as bridge_logs
from bridge.server import AudioSocketServer, Handler
from support.llm import LLM_KEY
from voice.config import TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator
from voice.emulators.llm import LLMEmulator
from voice.emulators.redis_server import RedisServer, free_port
from voice.emulators.stt import STTEmulator, mount_stt
from voice.tts_manager import aclose_shared_client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` (many seconds each) first: pytest-xdist hands tests out in this order, so the long
    ones start at once on every worker instead of trailing at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: otherwise as collected


# --- Redis and ports --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (one per xdist worker), on a free port in a temporary
    directory (really its own: `RedisServer` gives up a port another worker took first)."""
    with RedisServer() as server:  # closed (stopped, its directory removed) on the way out
        yield server


@pytest.fixture(params=[True, False], ids=["native-tick", "python-tick"])
def native_tick(request: pytest.FixtureRequest) -> bool:
    """For tests of a served call run with both ticks: the C one and the pure-Python reference."""
    return bool(request.param)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session Redis, flushed before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private Redis this test may kill, hang, reconfigure or restart without disturbing the shared one."""
    with RedisServer() as server:  # closed (stopped, its directory removed) on the way out
        yield server


@pytest.fixture
def unused_port() -> int:
    return free_port()


# --- logging --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The one logging reset. `main`/`configure_logging` change process-wide state (structlog's
    configuration, the root logger's handlers and level, the secrets masked in logs): each test starts and
    ends with them as they were, so no test sees another's logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    secrets = set(bridge_logs._secret_values)
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    yield
    if was_configured:
        structlog.configure(**config)
    else:
        structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    bridge_logs._secret_values.clear()
    bridge_logs._secret_values.update(secrets)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The structlog events the test emits, as dicts."""
    with capture_logs() as captured:
        yield captured


# --- the emulators --------------------------------------------------------------------------------------


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A fresh in-process ElevenLabs emulator on a real loopback port."""
    async with Emulator() as emu:
        yield emu


@pytest.fixture
async def tts_config(emulator: Emulator) -> AsyncIterator[TTSConfig]:
    """Settings pointing at `emulator`, with short timeouts and backoff so failures are quick."""
    config = TTSConfig(
        api_key=DEFAULT_API_KEY,
        base_url=emulator.url,
        voice_id=DEFAULT_VOICES[0],
        connect_timeout_s=2.0,
        read_timeout_s=5.0,
        retry_backoff_s=0.01,
    )
    yield config
    await aclose_shared_client()


class Mounted:
    """The ElevenLabs emulator with speech-to-text mounted, as the bridge would meet it."""

    def __init__(self, tts: Emulator, stt: STTEmulator) -> None:
        self.tts, self.stt, self.url, self.key = tts, stt, tts.url, DEFAULT_API_KEY


@pytest.fixture
async def emulators() -> AsyncIterator[Mounted]:
    tts = Emulator()
    stt = mount_stt(tts)
    async with tts:
        yield Mounted(tts, stt)


@pytest.fixture
async def fake_llm() -> AsyncIterator[LLMEmulator]:
    """The fake OpenAI-compatible endpoint, accepting `LLM_KEY`."""
    async with LLMEmulator(api_key=LLM_KEY) as llm:
        yield llm


# --- a real AudioSocket server ----------------------------------------------------------------------------

StartServer = Callable[..., Awaitable[AudioSocketServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """`await start_server(handler=None, **config_overrides)` -> a started server, stopped after the test."""
    servers: list[AudioSocketServer] = []

    async def start(handler: Handler | None = None, **overrides: Any) -> AudioSocketServer:
        config = BridgeConfig().model_copy(update=dict(host="127.0.0.1", port=0, **overrides))
        server = AudioSocketServer(config, handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0)
