"""The whole call path on real parts, for the end-to-end tests: a private Redis, the ElevenLabs emulator, the
bridge's server and composition root in this process on a loopback port, and the simulated Asterisk caller."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import redis.asyncio as aioredis

from bridge.app import BridgeApp
from bridge.call import Call
from bridge.config import BridgeConfig, Settings
from bridge.dialogue import Dialogue, parse_dialogue
from bridge.ops.metrics import Metrics
from bridge.server import AudioSocketServer
from bridge.sim.caller import CallReport, place_call
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator
from voice.keys import static_key
from voice.tts_manager import aclose_shared_client

FRAGMENTS = Path(__file__).resolve().parents[2] / "bridge" / "data" / "fragments"


@dataclasses.dataclass
class Stack:
    settings: Settings
    cache: RedisCacheManager
    emulator: Emulator
    redis: aioredis.Redis
    runtime: BridgeApp | None = None
    server: AudioSocketServer | None = None

    async def start(self, dialogue: str | Dialogue, **bridge: object) -> None:
        """(Re)start the bridge with `dialogue` (TOML text or a model) and BridgeConfig overrides."""
        await self.stop_bridge()
        model = parse_dialogue(dialogue, "<test>") if isinstance(dialogue, str) else dialogue
        settings = self.settings.model_copy(update=dict(bridge=self.settings.bridge.model_copy(update=bridge)))
        self.runtime = BridgeApp(settings, dialogue=model, cache=self.cache, metrics=Metrics())
        await self.runtime.start()
        self.server = AudioSocketServer(settings.bridge, self.runtime.handle)
        await self.server.start()

    async def stop_bridge(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None
        if self.runtime is not None:
            await self.runtime.hub.drain()
            self.runtime = None

    async def call(self, **kw: object) -> CallReport:
        kw.setdefault("keep_audio", True)
        kw.setdefault("max_wait_s", 20)
        assert self.server is not None, "start the bridge first: await stack.start(dialogue)"
        return await place_call("127.0.0.1", self.server.port, **kw)

    def calls(self) -> list[Call]:
        assert self.server is not None, "start the bridge first: await stack.start(dialogue)"
        return list(self.server.calls)

    async def fragment(self, name: str) -> list[bytes]:
        frames = await self.cache.get_audio_chunks(static_key(name))
        assert frames, f"fragment {name} not loaded"
        return frames


@contextlib.asynccontextmanager
async def make_stack(redis_url: str):
    """Cache (fragments loaded), emulator and settings; the bridge itself starts with `Stack.start`."""
    await RedisCacheManager.reset_instance()
    cache = RedisCacheManager(CacheConfig(redis_url=redis_url, breaker_cooloff_s=0.5))
    await cache.connect()
    for wav in sorted(FRAGMENTS.glob("*.wav")):
        loaded = await cache.load_and_set_audio(static_key(wav.stem), str(wav))
        assert loaded.stored, wav
    emulator = Emulator()
    await emulator.start()
    settings = Settings(
        bridge=BridgeConfig(port=0, grace_s=0, filler_after_s=0.4),
        cache=cache.config,
        tts=TTSConfig(api_key=DEFAULT_API_KEY, base_url=emulator.url, voice_id=DEFAULT_VOICES[0],
                      retry_backoff_s=0.01, connect_timeout_s=2.0, read_timeout_s=5.0),
    )
    client = aioredis.Redis.from_url(redis_url)
    s = Stack(settings=settings, cache=cache, emulator=emulator, redis=client)
    try:
        yield s
    finally:
        await s.stop_bridge()
        await emulator.stop()
        await client.aclose()
        await aclose_shared_client()
        await RedisCacheManager.reset_instance()


def frames_of(audio: bytes) -> list[bytes]:
    return [audio[i : i + 320] for i in range(0, len(audio) - 319, 320)]


def strip_silence(frames: list[bytes]) -> list[bytes]:
    """Frames without the all-zero ones at both ends (the bridge's silence, a fragment's padding)."""
    zero = bytes(320)
    start = 0
    while start < len(frames) and frames[start] == zero:
        start += 1
    end = len(frames)
    while end > start and frames[end - 1] == zero:
        end -= 1
    return frames[start:end]


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    """Poll an async or plain predicate until it is truthy; return its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(interval)


def nonzero(frames: list[bytes]) -> list[bytes]:
    """The frames that carry sound; comparing these ignores silence the bridge inserts between items."""
    zero = bytes(320)
    return [f for f in frames if f != zero]
