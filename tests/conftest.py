"""Shared fixtures: a private Redis server (never a developer's own), and free ports."""

from __future__ import annotations

import pytest

from voice.emulators.redis_server import RedisServer, free_port


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server for the whole session, on a free port in a temporary directory."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """URL of a Redis database flushed before the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def unused_port() -> int:
    return free_port()
