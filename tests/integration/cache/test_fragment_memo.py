"""FragmentMemo on a real Redis: reuse within the TTL, one read for many callers, freshness, degrading."""

from __future__ import annotations

import asyncio

import pytest
import redis

from support.cache import connected_cache
from voice.cache import RedisCacheManager
from voice.config import CacheConfig
from voice.fragment_memo import FragmentMemo
from voice.keys import static_key, tts_key

HELLO = [bytes([1]) * 320, bytes([2]) * 320]
NEW_HELLO = [bytes([9]) * 320]


@pytest.fixture
async def cache(redis_url):
    async with connected_cache(CacheConfig(redis_url=redis_url, breaker_cooloff_s=30)) as manager:
        yield manager


def _replace(raw: redis.Redis, key: str, chunks: list[bytes]) -> None:
    """What `voice-bridge load-audio` does to a running bridge's fragment: a new list under the same key."""
    raw.delete(key)
    raw.rpush(key, *chunks)


async def test_a_fragment_is_read_once_and_shared_within_the_ttl(cache, raw):
    _replace(raw, static_key("hello"), HELLO)
    memo = FragmentMemo(cache, ttl_s=60)
    first = await memo.get_audio_chunks(static_key("hello"))
    _replace(raw, static_key("hello"), NEW_HELLO)  # replaced behind the memo's back
    second = await memo.get_audio_chunks(static_key("hello"))
    assert first == HELLO and second is first  # the same list object: no copy per call
    assert (memo.reads, memo.hits) == (1, 1)


async def test_after_the_ttl_the_new_audio_is_read(cache, raw):
    _replace(raw, static_key("hello"), HELLO)
    memo = FragmentMemo(cache, ttl_s=0.2)
    assert await memo.get_audio_chunks(static_key("hello")) == HELLO
    _replace(raw, static_key("hello"), NEW_HELLO)
    await asyncio.sleep(0.3)
    assert await memo.get_audio_chunks(static_key("hello")) == NEW_HELLO
    assert memo.reads == 2


async def test_many_callers_at_once_share_one_read(cache, raw):
    _replace(raw, static_key("menu"), HELLO)
    before = raw.info("stats")["keyspace_hits"]
    memo = FragmentMemo(cache, ttl_s=60)
    results = await asyncio.gather(*(memo.get_audio_chunks(static_key("menu")) for _ in range(50)))
    assert all(r == HELLO for r in results)
    assert memo.reads == 1
    assert raw.info("stats")["keyspace_hits"] - before == 1  # Redis saw a single LRANGE


async def test_a_caller_that_hangs_up_does_not_cancel_the_read_for_the_others(cache, raw):
    _replace(raw, static_key("menu"), HELLO)
    memo = FragmentMemo(cache, ttl_s=60)
    leaving = asyncio.ensure_future(memo.get_audio_chunks(static_key("menu")))
    staying = asyncio.ensure_future(memo.get_audio_chunks(static_key("menu")))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == HELLO
    assert leaving.cancelled()


async def test_ttl_zero_reads_redis_every_time(cache, raw):
    _replace(raw, static_key("hello"), HELLO)
    memo = FragmentMemo(cache, ttl_s=0)
    await memo.get_audio_chunks(static_key("hello"))
    _replace(raw, static_key("hello"), NEW_HELLO)
    assert await memo.get_audio_chunks(static_key("hello")) == NEW_HELLO


async def test_tts_keys_and_texts_are_passed_through_not_kept(cache, raw):
    key = tts_key("двенадцать", "0123456789ab")
    _replace(raw, key, HELLO)
    memo = FragmentMemo(cache, ttl_s=60)
    assert await memo.get_audio_chunks(key) == HELLO
    _replace(raw, key, NEW_HELLO)
    assert await memo.get_audio_chunks(key) == NEW_HELLO  # a TTS entry is never served from memory
    assert memo.reads == 0 and memo.hits == 0


async def test_a_fragment_deleted_from_a_healthy_redis_is_gone_after_the_ttl(cache, raw):
    _replace(raw, static_key("hello"), HELLO)
    memo = FragmentMemo(cache, ttl_s=0.1)
    await memo.get_audio_chunks(static_key("hello"))
    raw.delete(static_key("hello"))
    await asyncio.sleep(0.15)
    assert await memo.get_audio_chunks(static_key("hello")) is None
    assert memo.stale_served == 0


async def test_a_write_through_the_memo_is_heard_at_once(cache, raw):
    _replace(raw, static_key("hello"), HELLO)
    memo = FragmentMemo(cache, ttl_s=60)
    await memo.get_audio_chunks(static_key("hello"))
    assert await memo.set_audio_chunks(static_key("hello"), NEW_HELLO)
    assert await memo.get_audio_chunks(static_key("hello")) == NEW_HELLO


async def test_redis_down_keeps_playing_the_last_good_copy(own_redis):
    server = own_redis
    await RedisCacheManager.reset_instance()
    cache = RedisCacheManager(CacheConfig(redis_url=server.url, breaker_cooloff_s=30))
    try:
        await cache.connect()
        client = redis.Redis.from_url(server.url)
        _replace(client, static_key("hello"), HELLO)
        client.close()
        memo = FragmentMemo(cache, ttl_s=0.1)
        assert await memo.get_audio_chunks(static_key("hello")) == HELLO
        server.stop(kill=True)
        await asyncio.sleep(0.15)
        assert await memo.get_audio_chunks(static_key("hello")) == HELLO  # stale, but speech
        assert memo.stale_served == 1
        assert await memo.get_audio_chunks(static_key("never_read")) is None  # nothing to fall back on
    finally:
        await RedisCacheManager.reset_instance()


async def test_the_wrapped_cache_shows_through(cache):
    memo = FragmentMemo(cache, ttl_s=5)
    assert await memo.ping() is True  # health checks reach Redis through the memo
    assert memo.config is cache.config
    with pytest.raises(ValueError, match="ttl_s"):
        FragmentMemo(cache, ttl_s=-1)
