"""The media clock's wall-clock precision on a real event loop (marker `perf`: run with `-m perf` on a quiet
machine). The rules themselves are tested exactly, with a fake clock, in tests/unit/test_schedule.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.clock import MediaClock
from support.clock import Recorder, run_for


@pytest.mark.perf
async def test_absolute_schedule_does_not_drift():
    clock = MediaClock()
    m = Recorder()
    await run_for(clock, [m], 1.0)
    await clock.stop()
    n = len(m.times)
    assert 40 <= n <= 52, n
    # the k-th tick sits at first + k * 20 ms: lateness does not accumulate (a noisy machine may delay
    # single ticks, so the bound is on the median and on the last tick, not on every tick)
    errors = sorted(abs(t - (m.times[0] + k * 0.02)) for k, t in enumerate(m.times))
    assert errors[len(errors) // 2] < 0.005, errors
    assert abs(m.times[-1] - (m.times[0] + (n - 1) * 0.02)) < 0.03


@pytest.mark.perf
async def test_first_tick_is_immediate_on_an_idle_clock():
    clock = MediaClock()
    m = Recorder()
    t = time.monotonic()
    clock.add(m)
    await asyncio.sleep(0.05)
    clock.discard(m)
    await clock.stop()
    assert m.times and m.times[0] - t < 0.005


@pytest.mark.perf
async def test_calls_are_spread_over_phases_and_each_gets_one_frame_per_period():
    clock = MediaClock(slots=10)
    members = [Recorder() for _ in range(40)]
    await run_for(clock, members, 0.5)
    await clock.stop()
    per_slot: dict[int, int] = {}
    for m in members:
        slot = round(((m.times[0] - members[0].times[0]) % 0.02) / 0.002) % 10
        per_slot[slot] = per_slot.get(slot, 0) + 1
    assert len(per_slot) >= 5, per_slot  # spread, not one batch
    for m in members:
        gaps = [b - a for a, b in zip(m.times, m.times[1:], strict=False)]
        assert 15 <= len(m.times) <= 27
        assert min(gaps) > 0.009, min(gaps)


@pytest.mark.perf
async def test_catching_up_never_bursts():
    """Held up by 70 ms (below the resync threshold): missed ticks are caught up at most one per 10 ms."""
    clock = MediaClock(slots=1)
    m = Recorder()
    clock.add(m)
    await asyncio.sleep(0.1)
    time.sleep(0.07)
    await asyncio.sleep(0.4)
    clock.discard(m)
    await clock.stop()
    gaps = [b - a for a, b in zip(m.times, m.times[1:], strict=False)]
    assert min(gaps) >= 0.0095, min(gaps)
    assert clock.resyncs == 0
    # nothing lost: the count matches the elapsed time on the absolute schedule
    span = m.times[-1] - m.times[0]
    assert abs((len(m.times) - 1) - span / 0.02) <= 2


@pytest.mark.perf
async def test_a_resynchronisation_does_not_burst():
    clock = MediaClock(slots=1, resync_s=0.1)
    m = Recorder()
    clock.add(m)
    await asyncio.sleep(0.1)
    time.sleep(0.3)
    await asyncio.sleep(0.2)
    clock.discard(m)
    await clock.stop()
    assert clock.resyncs == 1
    gaps = [b - a for a, b in zip(m.times, m.times[1:], strict=False)]
    assert min(gaps) >= 0.0095, min(gaps)  # none of the 15 missed frames is sent
    span = m.times[-1] - m.times[0]
    assert len(m.times) - 1 <= (span - 0.3) / 0.02 + 2  # the held 300 ms are dropped, not caught up
