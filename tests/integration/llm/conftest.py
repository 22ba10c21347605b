"""The LLM tests' stack: the flow tests' stack (Redis with the fragments, the TTS emulator) with LLM settings
for the shared `fake_llm` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support.llm import llm_config
from support.stack import Stack, make_stack
from voice.emulators.llm import LLMEmulator


@pytest.fixture
async def stack(redis_url: str, fake_llm: LLMEmulator) -> AsyncIterator[Stack]:
    async with make_stack(redis_url) as s:
        s.settings = s.settings.model_copy(update=dict(llm=llm_config(fake_llm)))
        yield s
