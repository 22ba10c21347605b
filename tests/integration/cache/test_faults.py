"""Redis killed, hung, absent or restarted: the cache returns empty values quickly, logs, skips Redis
during the cool-off, and works again by itself when Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import redis

from voice.cache import RedisCacheManager
from voice.emulators.redis_server import RedisServer, free_port

from .conftest import fault_config

GENEROUS_S = 2.0  # the deadline is 0.4 s; the machine is shared and noisy


def failures(logs) -> list[dict]:
    return [e for e in logs if e["event"] == "cache_redis_failed"]


async def wait_until_back(cache: RedisCacheManager, key: str, limit_s: float = 5.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        got = await cache.get_audio_chunks(key)
        if got is not None:
            return got
        await asyncio.sleep(0.05)
    return None


async def test_redis_killed_mid_test_every_method_returns_empty_and_logs(own_redis, logs):
    cache = RedisCacheManager(fault_config(own_redis.url, cooloff=0))  # no breaker: every call meets the dead Redis
    await cache.connect()
    assert await cache.set_audio_chunks("static:a", [b"x" * 320])
    own_redis.stop(kill=True)

    started = time.monotonic()
    assert await cache.get_audio_chunks("static:a") is None
    assert await cache.set_audio_chunks("static:a", [b"y"]) is False
    assert await cache.set_text("summary:s", "text", 60) is False
    assert await cache.get_text("summary:s") is None
    assert await cache.ping() is False
    assert time.monotonic() - started < 5 * GENEROUS_S

    events = failures(logs)
    assert [e["operation"] for e in events] == ["get_audio_chunks", "set_audio_chunks", "set_text", "get_text", "ping"]
    assert [e["key"] for e in events[:4]] == ["static:a", "static:a", "summary:s", "summary:s"]
    assert all("Error" in e["error"] for e in events)


async def test_the_breaker_skips_redis_during_the_cool_off(own_redis, logs):
    cache = RedisCacheManager(fault_config(own_redis.url, cooloff=60))
    await cache.connect()
    own_redis.stop(kill=True)
    assert await cache.get_audio_chunks("static:a") is None
    assert not cache.available
    started = time.perf_counter()
    for _ in range(1000):
        assert await cache.get_audio_chunks("static:a") is None
    elapsed = time.perf_counter() - started
    # measured: under 2 us per call (docs/benchmarks.md, "Cache"); this bound is generous
    assert elapsed < GENEROUS_S / 4
    assert cache.skipped == 1000 and cache.failures == 1
    assert len(failures(logs)) == 1  # skipped calls never touched Redis, so there is nothing to log


async def test_redis_restarted_is_used_again_without_a_reconnect(own_redis, logs):
    cache = RedisCacheManager(fault_config(own_redis.url, cooloff=0.3))
    await cache.connect()
    await cache.set_audio_chunks("static:a", [b"a" * 320])
    assert await cache.get_audio_chunks("static:a") == [b"a" * 320]
    own_redis.stop(kill=True)
    assert await cache.get_audio_chunks("static:a") is None
    own_redis.start()  # same port, empty data (no persistence)
    with redis.Redis.from_url(own_redis.url) as raw:
        raw.rpush("static:a", b"b" * 320)
    assert await wait_until_back(cache, "static:a") == [b"b" * 320]
    assert any(e["event"] == "cache_recovered" for e in logs)
    assert await cache.set_text("summary:s", "back", 60) is True


async def test_connect_with_redis_down_returns_and_later_calls_work(logs):
    server = RedisServer(port=free_port())  # not started yet
    try:
        cache = RedisCacheManager(fault_config(server.url, cooloff=0.2))
        started = time.monotonic()
        await cache.connect()
        assert time.monotonic() - started < GENEROUS_S
        assert any(e["event"] == "cache_unavailable" for e in logs)
        assert failures(logs)[0]["operation"] == "ping"
        server.start()
        with redis.Redis.from_url(server.url) as raw:
            raw.rpush("static:a", b"a")
        assert await wait_until_back(cache, "static:a") == [b"a"]
    finally:
        server.close()


async def test_a_hung_redis_costs_at_most_the_deadline(own_redis, logs):
    cache = RedisCacheManager(fault_config(own_redis.url, cooloff=0.2))
    await cache.connect()
    await cache.set_audio_chunks("static:a", [b"a"])
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert await cache.get_audio_chunks("static:a") is None
        hung_for = time.monotonic() - started
        assert 0.1 <= hung_for < GENEROUS_S
        assert "Timeout" in failures(logs)[0]["error"]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await wait_until_back(cache, "static:a") == [b"a"]


async def test_after_the_cool_off_one_call_probes_and_the_others_keep_skipping(own_redis):
    cache = RedisCacheManager(fault_config(own_redis.url, cooloff=0.2))
    await cache.connect()
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # a hung Redis makes the probe slow, so the others overlap it
    try:
        assert await cache.get_audio_chunks("static:a") is None
        assert cache.failures == 1
        await asyncio.sleep(0.3)  # cool-off over
        results = await asyncio.gather(*(cache.get_audio_chunks("static:a") for _ in range(20)))
        assert results == [None] * 20
        assert cache.failures == 2  # only the probe met Redis
        assert cache.skipped == 19
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_cancelled_probe_does_not_wedge_the_breaker(own_redis):
    cache = RedisCacheManager(fault_config(own_redis.url, cooloff=0.1))
    await cache.connect()
    await cache.set_audio_chunks("static:a", [b"a"])
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert await cache.get_audio_chunks("static:a") is None
        await asyncio.sleep(0.15)
        probe = asyncio.create_task(cache.get_audio_chunks("static:a"))
        await asyncio.sleep(0.05)  # the probe is waiting on the hung Redis
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await wait_until_back(cache, "static:a") == [b"a"]
