"""A connected cache on a test's Redis, with the Singleton reset around it (no instance leaks between tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from voice.cache import RedisCacheManager
from voice.config import CacheConfig


@contextlib.asynccontextmanager
async def connected_cache(config: CacheConfig) -> AsyncIterator[RedisCacheManager]:
    """A `RedisCacheManager` with `config`, connected; reset on the way out (on the loop its connections
    belong to)."""
    await RedisCacheManager.reset_instance()
    manager = RedisCacheManager(config)
    try:
        await manager.connect()
        yield manager
    finally:
        await RedisCacheManager.reset_instance()
