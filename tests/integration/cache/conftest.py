"""Fixtures for the cache tests: a fresh RedisCacheManager per test, a raw client to look behind it, and
fault-test settings. (The private Redis a test may kill is the shared `own_redis`; WAV writers are in
support/wav.py.)"""

from __future__ import annotations

import pytest
import redis

from support.cache import connected_cache
from voice.cache import RedisCacheManager
from voice.config import CacheConfig


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
    async with connected_cache(cache_config) as manager:
        yield manager


@pytest.fixture
def raw(redis_url):
    """A plain synchronous client on the same database, to check what the cache really wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def fault_config(url: str, cooloff: float = 0.3) -> CacheConfig:
    """Short timeouts so fault tests are quick; the overall deadline is 0.1 + 2 * 0.15 = 0.4 s."""
    return CacheConfig(redis_url=url, redis_socket_timeout_s=0.15, redis_connect_timeout_s=0.1,
                       breaker_cooloff_s=cooloff)
