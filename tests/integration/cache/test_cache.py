"""RedisCacheManager on a real Redis: round trips, binary safety, TTLs, atomicity, validation, Singleton."""

from __future__ import annotations

import asyncio

import pytest
import redis

from voice import keys
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, ConfigError, TTSConfig
from voice.domain.interfaces.cache import AbstractCache

FRAME = 320


def chunks_of(marker: int, count: int, size: int = FRAME) -> list[bytes]:
    """`count` distinct chunks: each starts with its index, then is filled with `marker`."""
    return [index.to_bytes(2, "big") + bytes([marker]) * (size - 2) for index in range(count)]


def command_calls(raw: redis.Redis) -> dict[str, int]:
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    return {name: count for name, count in calls.items() if not name.startswith(("info", "config"))}


# --- interface ---------------------------------------------------------------------------------------


def test_the_manager_implements_the_interface():
    assert issubclass(RedisCacheManager, AbstractCache)
    assert not getattr(RedisCacheManager, "__abstractmethods__", None)


# --- audio round trips -------------------------------------------------------------------------------


async def test_audio_round_trip(cache):
    chunks = chunks_of(7, 150)
    assert await cache.set_audio_chunks("static:intro", chunks) is True
    assert await cache.get_audio_chunks("static:intro") == chunks


async def test_audio_is_binary_safe(cache):
    chunks = [bytes(range(256)), b"\r\n*3\r\n$-1\r\n", b"\x00" * 320, bytes(range(255, -1, -1)) * 2]
    await cache.set_audio_chunks("static:binary", chunks)
    got = await cache.get_audio_chunks("static:binary")
    assert got == chunks
    assert all(type(chunk) is bytes for chunk in got)


async def test_a_missing_key_gives_none(cache):
    assert await cache.get_audio_chunks("static:nothing") is None


async def test_a_write_replaces_the_list_it_does_not_append(cache):
    await cache.set_audio_chunks("static:x", chunks_of(1, 10))
    await cache.set_audio_chunks("static:x", chunks_of(2, 3))
    assert await cache.get_audio_chunks("static:x") == chunks_of(2, 3)


async def test_a_get_is_one_round_trip_and_a_set_is_one_multi_block(cache, raw):
    await cache.set_audio_chunks("static:x", chunks_of(1, 5))
    raw.config_resetstat()
    await cache.get_audio_chunks("static:x")
    assert command_calls(raw) == {"lrange": 1}

    raw.config_resetstat()
    await cache.set_audio_chunks(keys.tts_key("12500", TTSConfig()), chunks_of(1, 5))
    assert command_calls(raw) == {"multi": 1, "del": 1, "rpush": 1, "expire": 1, "exec": 1}


# --- expiry ------------------------------------------------------------------------------------------


async def test_static_keys_never_expire(cache, raw):
    await cache.set_audio_chunks("static:intro", chunks_of(1, 2))
    assert raw.ttl("static:intro") == -1


async def test_tts_keys_get_the_configured_ttl(redis_url, raw):
    cache = RedisCacheManager(CacheConfig(redis_url=redis_url, tts_ttl_s=12345))
    key = keys.tts_key("12500", TTSConfig())
    await cache.set_audio_chunks(key, chunks_of(1, 2))
    assert 12340 <= raw.ttl(key) <= 12345


async def test_the_default_tts_ttl_is_thirty_days(cache, raw):
    key = keys.tts_key("12500", TTSConfig())
    await cache.set_audio_chunks(key, chunks_of(1, 2))
    assert 30 * 86400 - 10 <= raw.ttl(key) <= 30 * 86400


async def test_an_explicit_ttl_wins(cache, raw):
    await cache.set_audio_chunks("static:short", chunks_of(1, 2), ttl_seconds=100)
    assert 95 <= raw.ttl("static:short") <= 100


async def test_rewriting_without_ttl_removes_the_old_expiry(cache, raw):
    await cache.set_audio_chunks("static:x", chunks_of(1, 2), ttl_seconds=100)
    await cache.set_audio_chunks("static:x", chunks_of(2, 2))
    assert raw.ttl("static:x") == -1


# --- text --------------------------------------------------------------------------------------------


async def test_text_round_trip_with_its_ttl(cache, raw):
    key = keys.summary_key("session-1")
    assert await cache.set_text(key, "Клиент спросил о платеже 12500 ₽", 60) is True
    assert await cache.get_text(key) == "Клиент спросил о платеже 12500 ₽"
    assert 55 <= raw.ttl(key) <= 60


async def test_missing_text_gives_none(cache):
    assert await cache.get_text("summary:none") is None


async def test_text_that_is_not_utf8_gives_none_and_is_logged(cache, raw, logs):
    raw.set("call:bad", b"\xff\xfe\x00")
    assert await cache.get_text("call:bad") is None
    assert any(e["event"] == "cache_text_not_utf8" and e["key"] == "call:bad" for e in logs)


async def test_a_wrong_type_is_logged_and_does_not_open_the_breaker(cache, raw, logs):
    raw.set("static:text", b"not a list")
    assert await cache.get_audio_chunks("static:text") is None
    event = next(e for e in logs if e["event"] == "cache_command_failed")
    assert event["operation"] == "get_audio_chunks" and event["key"] == "static:text"
    assert "WRONGTYPE" in event["error"]
    assert cache.available
    await cache.set_audio_chunks("static:ok", chunks_of(1, 1))
    assert await cache.get_audio_chunks("static:ok") == chunks_of(1, 1)


# --- the caller's mistakes raise, and write nothing --------------------------------------------------


@pytest.mark.parametrize(
    "chunks, error, message",
    [
        ([], ValueError, "no audio chunks"),
        ((), ValueError, "no audio chunks"),
        ([b"ok", b""], ValueError, "chunk 1 is empty"),
        ([b"ok", "text"], TypeError, "chunk 1 is str"),
        (b"raw bytes", TypeError, "list of byte chunks"),
    ],
)
async def test_bad_chunk_lists_raise_a_clear_error(cache, raw, chunks, error, message):
    with pytest.raises(error, match=message):
        await cache.set_audio_chunks("static:bad", chunks)
    assert raw.exists("static:bad") == 0


@pytest.mark.parametrize("ttl", [0, -5, True, 1.5, "60"])
async def test_bad_ttls_raise(cache, raw, ttl):
    with pytest.raises(ValueError, match="ttl_seconds"):
        await cache.set_audio_chunks("static:bad", [b"x"], ttl_seconds=ttl)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await cache.set_text("summary:bad", "text", ttl)
    assert raw.dbsize() == 0


async def test_set_text_needs_a_string(cache):
    with pytest.raises(TypeError, match="text must be a string"):
        await cache.set_text("summary:x", b"bytes", 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", None, 5])
async def test_bad_keys_raise(cache, key):
    with pytest.raises(ValueError, match="cache key"):
        await cache.get_audio_chunks(key)


# --- concurrency -------------------------------------------------------------------------------------


async def test_more_concurrent_callers_than_connections_all_get_their_audio(redis_url):
    cache = RedisCacheManager(CacheConfig(redis_url=redis_url, max_connections=4))
    chunks = chunks_of(3, 150)
    await cache.set_audio_chunks("static:busy", chunks)
    results = await asyncio.gather(*(cache.get_audio_chunks("static:busy") for _ in range(200)))
    assert all(result == chunks for result in results)
    assert cache.failures == 0


async def _poll(
    cache: RedisCacheManager, key: str, allowed: list[list[bytes]], stop: asyncio.Event
) -> tuple[int, list]:
    reads, bad = 0, []
    while not stop.is_set():
        got = await cache.get_audio_chunks(key)
        reads += 1
        if got not in allowed:
            bad.append(None if got is None else len(got))
    return reads, bad


async def test_readers_never_see_a_half_written_list(cache):
    key = "static:atomic"
    a, b = chunks_of(0xAA, 500), chunks_of(0xBB, 500)
    await cache.set_audio_chunks(key, a)
    stop = asyncio.Event()
    readers = [asyncio.create_task(_poll(cache, key, [a, b], stop)) for _ in range(4)]
    for round_ in range(60):
        assert await cache.set_audio_chunks(key, b if round_ % 2 == 0 else a)
    stop.set()
    outcomes = await asyncio.gather(*readers)
    assert sum(reads for reads, _ in outcomes) > 60  # the readers really ran alongside the writer
    assert [bad for _, bad in outcomes] == [[], [], [], []]


async def test_the_same_polling_does_catch_a_non_atomic_writer(cache, redis_url):
    """Control: DEL then RPUSH in slices, without MULTI, is caught by the readers above."""
    key = "static:torn"
    a, b = chunks_of(0xAA, 500), chunks_of(0xBB, 500)
    await cache.set_audio_chunks(key, a)
    writer = redis.asyncio.Redis.from_url(redis_url)
    stop = asyncio.Event()
    readers = [asyncio.create_task(_poll(cache, key, [a, b], stop)) for _ in range(4)]
    try:
        for round_ in range(40):
            new = b if round_ % 2 == 0 else a
            await writer.delete(key)
            for start in range(0, 500, 50):
                await writer.rpush(key, *new[start : start + 50])
    finally:
        stop.set()
        await writer.aclose()
    outcomes = await asyncio.gather(*readers)
    assert any(bad for _, bad in outcomes)


# --- Singleton ---------------------------------------------------------------------------------------


async def test_one_instance_per_process(cache_config):
    first = RedisCacheManager(cache_config)
    assert RedisCacheManager() is first
    assert RedisCacheManager(cache_config) is first


async def test_the_default_configuration_comes_from_the_environment(monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TTS_CACHE_TTL", "777")
    manager = RedisCacheManager()
    assert manager.config.redis_url == redis_url
    assert manager.config.tts_ttl_s == 777


async def test_another_configuration_needs_a_reset(cache_config, redis_url):
    first = RedisCacheManager(cache_config)
    await first.set_audio_chunks("static:x", [b"x"])
    other = CacheConfig(redis_url=redis_url, tts_ttl_s=60)
    with pytest.raises(RuntimeError, match="reset_instance"):
        RedisCacheManager(other)
    await RedisCacheManager.reset_instance()
    second = RedisCacheManager(other)
    assert second is not first
    assert second.config.tts_ttl_s == 60
    assert await second.get_audio_chunks("static:x") == [b"x"]


async def test_a_bad_url_fails_construction_and_leaves_no_instance(monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", "http://example.com")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        RedisCacheManager()
    with pytest.raises(ConfigError, match="REDIS_URL: bad cluster node"):
        RedisCacheManager(CacheConfig(redis_url="redis+cluster://127.0.0.1:notaport"))
    with pytest.raises(ConfigError, match="database 0"):
        RedisCacheManager(CacheConfig(redis_url="redis+cluster://127.0.0.1:7000/3"))
    assert RedisCacheManager(CacheConfig(redis_url=redis_url)).config.redis_url == redis_url


async def test_close_keeps_the_instance_usable(cache):
    await cache.set_audio_chunks("static:x", [b"x"])
    await cache.close()
    await cache.close()  # twice is fine
    assert await cache.get_audio_chunks("static:x") == [b"x"]


def test_the_instance_follows_a_new_event_loop(cache_config):
    """Each asyncio.run is a new loop; the Singleton opens new connections there instead of failing."""
    cache = RedisCacheManager(cache_config)
    assert asyncio.run(cache.set_audio_chunks("static:x", [b"x"])) is True
    assert asyncio.run(cache.get_audio_chunks("static:x")) == [b"x"]
    assert cache.failures == 0

    async def use_and_close():
        got = await cache.get_audio_chunks("static:x")
        await cache.close()
        return got

    assert asyncio.run(use_and_close()) == [b"x"]
