"""`ConversationManager`: memory of a call, summarised past its limit, the summary cached in Redis as specified."""

from __future__ import annotations

import pytest

from support.cache import connected_cache
from support.llm import llm_config, summary_requests
from support.stack import wait_for
from voice.cache import RedisCacheManager
from voice.config import CacheConfig
from voice.llm import KEEP_RECENT, SUMMARY_INSTRUCTION, ChatMessage, ConversationManager, OpenAICompatibleSource
from voice.tts_manager import aclose_shared_client


@pytest.fixture
async def cache(redis_url):
    async with connected_cache(CacheConfig(redis_url=redis_url, breaker_cooloff_s=0.2)) as manager:
        yield manager
    await aclose_shared_client()


def conversation(fake, cache, session="call-1", memory_chars=60, ttl=300) -> ConversationManager:
    return ConversationManager(session, OpenAICompatibleSource(llm_config(fake)), cache, memory_chars=memory_chars,
                        summary_ttl_s=ttl)


async def test_short_memory_is_sent_word_for_word(fake_llm, cache):
    memory = conversation(fake_llm, cache, memory_chars=1000)
    memory.add_exchange("Назови число", "Семь.")
    memory.add_choice("menu", "2")
    memory.add_exchange("Повтори", "Семь.", interrupted=True)
    assert memory.messages() == [
        ChatMessage("user", "Назови число"), ChatMessage("assistant", "Семь."),
        ChatMessage("user", "pressed 2 in the menu of 'menu'"),
        ChatMessage("user", "Повтори"), ChatMessage("assistant", "Семь. [the caller interrupted here]"),
    ]
    await memory.settle()
    assert fake_llm.stats.requests == 0


async def test_an_empty_answer_is_not_remembered(fake_llm, cache):
    memory = conversation(fake_llm, cache)
    memory.add_exchange("Скажи", "   ")
    assert memory.messages() == []


async def test_past_the_limit_the_older_turns_are_summarised_and_cached_with_a_ttl(fake_llm, cache, redis_url):
    fake_llm.set_knobs(answer="Бот назвал числа один и два.")
    memory = conversation(fake_llm, cache, ttl=300)
    memory.add_exchange("Назови первое число", "Один.")
    memory.add_exchange("Назови второе число", "Два.")  # 48 characters: under the limit
    await memory.settle()
    assert fake_llm.stats.requests == 0
    memory.add_exchange("Назови третье число", "Три.")  # 71: over
    await memory.settle()
    [request] = summary_requests(fake_llm)
    assert request["prompt"].startswith(SUMMARY_INSTRUCTION)
    assert "Bot was asked: Назови первое число\nBot said: Один." in request["prompt"]
    assert "Три." not in request["prompt"], "the latest exchange is kept, not summarised"
    assert memory.summary == "Бот назвал числа один и два." and memory.summaries_computed == 1
    assert memory.messages() == [
        ChatMessage("system", "Summary of the call so far: Бот назвал числа один и два."),
        ChatMessage("user", "Назови третье число"), ChatMessage("assistant", "Три."),
    ]
    assert len(memory.turns) == KEEP_RECENT
    client = cache._client  # read it back the plain way
    keys = [k async for k in client.scan_iter("summary:*")]
    assert len(keys) == 1 and keys[0].decode().startswith("summary:call-1:")
    assert 0 < await client.ttl(keys[0]) <= 300


async def test_the_same_conversation_reads_its_summary_from_redis(fake_llm, cache):
    fake_llm.set_knobs(answer="Сводка.")
    for _ in range(2):
        memory = conversation(fake_llm, cache, session="same-session")
        for n in ("один", "два", "три"):
            memory.add_exchange(f"Назови число {n}", f"Число {n}.")
        await memory.settle()
        assert memory.summary == "Сводка."
    assert len(summary_requests(fake_llm)) == 1
    assert memory.summaries_from_cache == 1 and memory.summaries_computed == 0


async def test_a_different_conversation_does_not_reuse_another_summary(fake_llm, cache):
    fake_llm.set_knobs(answer="Сводка.")
    for answers in (("А.", "Б.", "В."), ("Х.", "Б.", "В.")):  # the same session, a different first answer
        memory = conversation(fake_llm, cache, session="same-session", memory_chars=40)
        for index, answer in enumerate(answers):
            memory.add_exchange(f"Вопрос номер {index}", answer)
        await memory.settle()
    assert len(summary_requests(fake_llm)) == 2


async def test_summaries_go_on_as_the_call_goes_on(fake_llm, cache):
    fake_llm.set_knobs(answer="Сводка.")
    memory = conversation(fake_llm, cache, memory_chars=50)
    for index in range(8):
        memory.add_exchange(f"Вопрос номер {index}", f"Ответ {index}.")
        await memory.settle()
    assert memory.summaries_computed >= 3
    assert memory.chars <= 50 + 40, "the memory stays bounded"
    later = summary_requests(fake_llm)[-1]["prompt"]
    assert "Earlier summary: Сводка." in later


async def test_with_redis_down_the_summary_is_still_made(fake_llm, own_redis):
    fake_llm.set_knobs(answer="Сводка.")
    private = own_redis
    await RedisCacheManager.reset_instance()
    cache = RedisCacheManager(CacheConfig(redis_url=private.url, breaker_cooloff_s=0.2))
    await cache.connect()
    private.stop(kill=True)
    memory = conversation(fake_llm, cache)
    for n in ("один", "два", "три"):
        memory.add_exchange(f"Назови число {n}", f"Число {n}.")
    await memory.settle()
    assert memory.summary == "Сводка." and memory.summaries_computed == 1
    await RedisCacheManager.reset_instance()
    await aclose_shared_client()


async def test_a_failing_llm_forgets_the_oldest_turns_instead_of_growing(fake_llm, cache):
    fake_llm.set_knobs(fail_status=500)
    memory = conversation(fake_llm, cache)
    for n in ("один", "два", "три"):
        memory.add_exchange(f"Назови число {n}", f"Число {n}.")
    await memory.settle()
    assert memory.summary is None
    assert [t.text for t in memory.turns] == ["Назови число три", "Число три."]
    assert [k async for k in cache._client.scan_iter("summary:*")] == []


async def test_closing_stops_a_summary_in_progress_and_caches_nothing(fake_llm, cache):
    fake_llm.set_knobs(answer="Сводка.", first_piece_delay_ms=2000)
    memory = conversation(fake_llm, cache)
    for n in ("один", "два", "три"):
        memory.add_exchange(f"Назови число {n}", f"Число {n}.")
    assert await wait_for(lambda: fake_llm.stats.in_flight == 1), "the summary request is under way"
    await memory.aclose()
    assert memory.summary is None
    assert await wait_for(lambda: fake_llm.stats.in_flight == 0), "the request was ended"
    memory.add_exchange("Ещё", "Ещё один ответ, уже после конца звонка.")
    await memory.settle()
    assert fake_llm.stats.requests == 1, "no new summary after the end"
    assert [k async for k in cache._client.scan_iter("summary:*")] == []


def test_a_bad_session_id_fails_at_once(fake_llm):
    with pytest.raises(ValueError):
        ConversationManager("bad\nsession", OpenAICompatibleSource(llm_config(fake_llm)), None, memory_chars=100,
                     summary_ttl_s=10)
