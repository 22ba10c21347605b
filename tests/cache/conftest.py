"""Fixtures for the cache tests: a fresh RedisCacheManager per test, a raw client to look behind it,
a private Redis that a test may kill, captured log events, and WAV files written with the stdlib."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest
import redis
import structlog

from voice.cache import RedisCacheManager
from voice.config import CacheConfig
from voice.emulators.redis_server import RedisServer


@pytest.fixture(autouse=True)
async def fresh_singleton():
    """Every test starts and ends without a cache instance (the Singleton must not leak between tests).

    Async, so the instance is closed on the loop its connections belong to."""
    await RedisCacheManager.reset_instance()
    yield
    await RedisCacheManager.reset_instance()


@pytest.fixture
def cache_config(redis_url) -> CacheConfig:
    return CacheConfig(redis_url=redis_url)


@pytest.fixture
async def cache(cache_config):
    manager = RedisCacheManager(cache_config)
    await manager.connect()
    yield manager
    await RedisCacheManager.reset_instance()


@pytest.fixture
def raw(redis_url):
    """A plain synchronous client on the same database, to check what the cache really wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def own_redis():
    """A private Redis this test may kill, hang or restart without disturbing the shared one."""
    server = RedisServer().start()
    yield server
    server.close()


def fault_config(url: str, cooloff: float = 0.3) -> CacheConfig:
    """Short timeouts so fault tests are quick; the overall deadline is 0.1 + 2 * 0.15 = 0.4 s."""
    return CacheConfig(
        redis_url=url, redis_socket_timeout_s=0.15, redis_connect_timeout_s=0.1, breaker_cooloff_s=cooloff
    )


@pytest.fixture
def logs():
    with structlog.testing.capture_logs() as captured:
        yield captured


# --- WAV fixtures ------------------------------------------------------------------------------------


def sine(rate: int, freq: float, count: int, amplitude: float) -> list[int]:
    return [round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(count)]


def write_pcm_wav(path: Path, frames: bytes, rate: int, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


def write_raw_wav(path: Path, format_tag: int, rate: int, width: int, channels: int, data: bytes) -> Path:
    """A WAV file with an arbitrary format tag (e.g. 3 = IEEE float, 6 = A-law), which `wave` cannot write."""
    block = width * channels
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block, block, width * 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def s16(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def from_s16(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))
