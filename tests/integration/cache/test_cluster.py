"""A real 3-node Redis Cluster started here: the cache works across slots on every node, and the
single-key MULTI write stays atomic there."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time

import pytest
import redis

from voice import keys
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, TTSConfig
from voice.emulators.redis_server import RedisServer, find_binary, free_port

from .test_cache import _poll, chunks_of


def cluster_port() -> int:
    """A free port p with p + 10000 free too (the cluster bus port), p <= 55535."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster():
    servers: list[RedisServer] = []
    try:
        for _ in range(3):
            server = RedisServer(port=cluster_port(), extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"))
            servers.append(server.start())
        create = subprocess.run(
            [find_binary("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        assert create.returncode == 0, create.stdout + create.stderr
        deadline = time.monotonic() + 30
        while True:
            states = []
            for server in servers:
                with redis.Redis(port=server.port) as node:
                    states.append(node.cluster("info")["cluster_state"])
            if states == ["ok"] * 3:
                break
            assert time.monotonic() < deadline, f"cluster not ready: {states}"
            time.sleep(0.05)
        yield servers
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def cluster_url(cluster):
    for server in cluster:
        with redis.Redis(port=server.port) as node:
            node.flushall()
    return f"redis+cluster://127.0.0.1:{cluster[0].port}"


def node_of(cluster, key: str) -> int:
    for server in cluster:
        with redis.Redis(port=server.port) as node:
            try:
                if node.exists(key):
                    return server.port
            except redis.exceptions.MovedError:  # the slot lives on another node
                continue
    raise AssertionError(f"{key} is on no node")


async def test_every_method_works_across_the_nodes(cluster, cluster_url):
    cache = RedisCacheManager(CacheConfig(redis_url=cluster_url))
    await cache.connect()
    assert cache.config.is_cluster and await cache.ping()
    names = [f"static:fragment{i}" for i in range(12)]
    for i, key in enumerate(names):
        assert await cache.set_audio_chunks(key, chunks_of(i, 20)) is True
    for i, key in enumerate(names):
        assert await cache.get_audio_chunks(key) == chunks_of(i, 20)
    assert len({node_of(cluster, key) for key in names}) == 3  # the keys really live on all three nodes

    tts = keys.tts_key("12500", TTSConfig())
    await cache.set_audio_chunks(tts, [bytes(range(256))])
    assert await cache.get_audio_chunks(tts) == [bytes(range(256))]
    with redis.Redis(port=node_of(cluster, tts)) as node:
        assert node.ttl(tts) > 29 * 86400

    assert await cache.set_text(keys.summary_key("s1"), "сводка", 60) is True
    assert await cache.get_text(keys.summary_key("s1")) == "сводка"
    assert await cache.get_audio_chunks("static:absent") is None


async def test_the_multi_write_is_atomic_on_a_cluster(cluster_url):
    cache = RedisCacheManager(CacheConfig(redis_url=cluster_url))
    key = "static:atomic"
    a, b = chunks_of(0xAA, 500), chunks_of(0xBB, 500)
    await cache.set_audio_chunks(key, a)
    stop = asyncio.Event()
    readers = [asyncio.create_task(_poll(cache, key, [a, b], stop)) for _ in range(3)]
    for round_ in range(30):
        assert await cache.set_audio_chunks(key, b if round_ % 2 == 0 else a)
    stop.set()
    outcomes = await asyncio.gather(*readers)
    assert sum(reads for reads, _ in outcomes) > 30
    assert all(bad == [] for _, bad in outcomes)


async def test_any_seed_node_will_do(cluster, cluster_url):
    dead = free_port()
    url = f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{cluster[1].port}"
    cache = RedisCacheManager(CacheConfig(redis_url=url))
    await cache.connect()
    assert await cache.set_audio_chunks("static:x", [b"x"]) is True
    assert await cache.get_audio_chunks("static:x") == [b"x"]


async def test_a_cluster_that_is_down_degrades_like_a_single_redis(logs):
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    cache = RedisCacheManager(CacheConfig(redis_url=url, redis_connect_timeout_s=0.1, redis_socket_timeout_s=0.1))
    started = time.monotonic()
    await cache.connect()
    assert await cache.get_audio_chunks("static:x") is None
    assert await cache.set_text("summary:x", "t", 5) is False
    assert time.monotonic() - started < 2.0
    assert any(e["event"] == "cache_redis_failed" and e["operation"] == "ping" for e in logs)
