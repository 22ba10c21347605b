"""The end-to-end tests' stack (see support/stack.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support.stack import Stack, make_stack


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[Stack]:
    async with make_stack(redis_url) as s:
        yield s
