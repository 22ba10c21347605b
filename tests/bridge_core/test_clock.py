"""The media clock on a real event loop: absolute schedule, phases, catch-up without bursts, resync."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.clock import Histogram, MediaClock


class Recorder:
    """A clock member that notes when it was ticked (the clock's whole contract with a call)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def clock_tick(self) -> None:
        self.times.append(time.monotonic())


async def run_for(clock: MediaClock, members, seconds: float) -> None:
    for m in members:
        clock.add(m)
    await asyncio.sleep(seconds)
    for m in members:
        clock.discard(m)


async def test_absolute_schedule_does_not_drift():
    clock = MediaClock()
    observed: list[float] = []
    clock.on_lateness = observed.append
    m = Recorder()
    await run_for(clock, [m], 1.0)
    await clock.stop()
    n = len(m.times)
    assert len(observed) == clock.ticks and all(x >= -0.001 for x in observed)
    assert 40 <= n <= 52, n
    # the k-th tick sits at first + k * 20 ms: lateness does not accumulate (a noisy machine may delay
    # single ticks, so the bound is on the median and on the last tick, not on every tick)
    errors = sorted(abs(t - (m.times[0] + k * 0.02)) for k, t in enumerate(m.times))
    assert errors[len(errors) // 2] < 0.005, errors
    assert abs(m.times[-1] - (m.times[0] + (n - 1) * 0.02)) < 0.03
    assert clock.ticks >= n and clock.lateness.count == clock.ticks


async def test_first_tick_is_immediate_on_an_idle_clock():
    clock = MediaClock()
    m = Recorder()
    t = time.monotonic()
    clock.add(m)
    await asyncio.sleep(0.05)
    clock.discard(m)
    await clock.stop()
    assert m.times and m.times[0] - t < 0.05


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
        gaps = [b - a for a, b in zip(m.times, m.times[1:])]
        assert 15 <= len(m.times) <= 27
        assert min(gaps) > 0.009, min(gaps)


async def test_catching_up_never_bursts():
    """Held up by 70 ms (below the resync threshold): missed ticks are caught up at most one per 10 ms."""
    clock = MediaClock(slots=1)
    m = Recorder()
    clock.add(m)
    await asyncio.sleep(0.1)
    time.sleep(0.07)  # block the loop
    await asyncio.sleep(0.4)
    clock.discard(m)
    await clock.stop()
    gaps = [b - a for a, b in zip(m.times, m.times[1:])]
    assert min(gaps) >= 0.0095, min(gaps)
    assert clock.resyncs == 0
    # nothing lost: the count matches the elapsed time on the absolute schedule
    span = m.times[-1] - m.times[0]
    assert abs((len(m.times) - 1) - span / 0.02) <= 2


async def test_resynchronises_when_far_behind():
    clock = MediaClock(slots=1, resync_s=0.1)
    m = Recorder()
    clock.add(m)
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # the loop is held far beyond the threshold
    await asyncio.sleep(0.2)
    clock.discard(m)
    await clock.stop()
    assert clock.resyncs >= 1
    gaps = [b - a for a, b in zip(m.times, m.times[1:])]
    assert min(gaps) >= 0.004, min(gaps)  # no burst of the 15 missed frames (catch-up is one per 10 ms; margin for a busy machine)
    assert clock.lateness.max >= 0.1 or clock.lateness.count  # the late tick was measured


async def test_a_failing_member_is_removed_and_others_go_on():
    class Broken:
        def clock_tick(self) -> None:
            raise RuntimeError("boom")

    clock = MediaClock()
    good, bad = Recorder(), Broken()
    clock.add(good)
    clock.add(bad)
    await asyncio.sleep(0.2)
    assert bad not in clock and good in clock
    assert len(good.times) >= 5
    clock.discard(good)
    await clock.stop()


async def test_discard_stops_the_frames_and_the_clock_parks():
    clock = MediaClock()
    m = Recorder()
    clock.add(m)
    await asyncio.sleep(0.1)
    clock.discard(m)
    n = len(m.times)
    ticks = clock.ticks
    await asyncio.sleep(0.1)
    assert len(m.times) == n
    assert clock.ticks == ticks  # parked: no empty ticks
    await clock.stop()


def test_histogram_percentiles():
    h = Histogram()
    for i in range(100):
        h.observe(i / 10000)  # 0 .. 9.9 ms
    assert h.count == 100
    assert h.percentile(50) == pytest.approx(0.005, abs=0.0002)
    assert h.percentile(99) == pytest.approx(0.0099, abs=0.0002)
    h.observe(3.0)  # beyond the top: the overflow bin, reported as the max
    assert h.max == 3.0 and h.percentile(100) == 3.0
    h.reset()
    assert h.count == 0 and h.percentile(50) == 0.0
