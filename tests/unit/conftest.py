"""The unit tests' rule, enforced: no sockets, no sleeps, no subprocesses.

Each is replaced for the test by a function that fails naming what was tried, so a test that needs one of
them belongs in tests/integration (or tests/perf), not here. Zero-delay `asyncio.sleep` (a yield to the
loop) and the event loop's own socket pair stay allowed.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


def _refuse(what: str) -> Any:
    def refused(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"a unit test may not {what}: move it to tests/integration")

    return refused


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_asyncio_sleep = asyncio.sleep

    async def zero_sleep_only(delay: float, result: object = None) -> object:
        if delay > 0:
            raise AssertionError(f"a unit test may not sleep ({delay} s): take `now` as an argument instead")
        return await real_asyncio_sleep(0, result)

    for method in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, method, _refuse(f"use a socket ({method})"))
    monkeypatch.setattr(socket, "create_connection", _refuse("open a connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a subprocess"))
    monkeypatch.setattr(time, "sleep", _refuse("sleep"))
    monkeypatch.setattr(asyncio, "sleep", zero_sleep_only)
    yield
