"""A media-clock member that records when it was ticked, and waits on a real event loop, for the clock
driver's tests (tests/integration/bridge/test_clock_driver.py) and its timing tests (tests/perf)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from bridge.clock import MediaClock


class Recorder:
    """A clock member that notes when it was ticked (the clock's whole contract with a call)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def clock_tick(self) -> None:
        self.times.append(time.monotonic())


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for `condition()` (a generous timeout: the machine is shared)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def run_for(clock: MediaClock, members: Iterable[Recorder], seconds: float) -> None:
    """`members` on `clock` for `seconds` of wall time."""
    joined = list(members)
    for m in joined:
        clock.add(m)
    await asyncio.sleep(seconds)
    for m in joined:
        clock.discard(m)
