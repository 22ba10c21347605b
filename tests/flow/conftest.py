"""Fixtures for the end-to-end tests (see helpers.py)."""

from __future__ import annotations

import pytest

from flow.helpers import make_stack


@pytest.fixture
async def stack(redis_url):
    async with make_stack(redis_url) as s:
        yield s
