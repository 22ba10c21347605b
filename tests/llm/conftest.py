"""Fixtures for the LLM tests: the fake OpenAI-compatible endpoint, and the end-to-end stack with it."""

from __future__ import annotations

import pytest

from flow.helpers import make_stack
from voice.config import LLMConfig
from voice.emulators.llm import LLMEmulator

LLM_KEY = "llm-test-key"


@pytest.fixture
async def fake_llm():
    async with LLMEmulator(api_key=LLM_KEY) as emulator:
        yield emulator


def llm_config(fake: LLMEmulator, **overrides) -> LLMConfig:
    values = {"llm_base_url": fake.url, "llm_api_key": LLM_KEY, "llm_model": "test-model", "llm_read_timeout_s": 5.0}
    return LLMConfig(**{**values, **overrides})


@pytest.fixture
async def stack(redis_url, fake_llm):
    """The flow tests' stack (Redis with the fragments, the TTS emulator) with LLM settings for `fake_llm`."""
    async with make_stack(redis_url) as s:
        s.settings = s.settings.model_copy(update=dict(llm=llm_config(fake_llm)))
        yield s
