"""The media clock's driver on a real event loop.

The pacing rules themselves are tested exactly, with a fake clock, in tests/unit/test_schedule.py. Here:
that the asyncio task drives them (ticks flow, parks with nobody, survives a broken call, logs a
resynchronisation, runs in a context of its own). The default tests assert only what a loaded machine
cannot break (lower bounds on lateness that the test itself causes, upper bounds on frame counts that the
spacing rule guarantees); the wall-clock precision tests are marked `perf` and run with `-m perf`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterable

import pytest
import structlog
from structlog.testing import capture_logs

from bridge.clock import MediaClock


class Recorder:
    """A clock member that notes when it was ticked (the clock's whole contract with a call)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def clock_tick(self) -> None:
        self.times.append(time.monotonic())


async def until(condition, timeout_s: float = 10.0) -> None:
    """Wait for `condition()` (a generous timeout: the machine is shared)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def run_for(clock: MediaClock, members: Iterable[Recorder], seconds: float) -> None:
    members = list(members)
    for m in members:
        clock.add(m)
    await asyncio.sleep(seconds)
    for m in members:
        clock.discard(m)


# --- default run: what holds on any machine ----------------------------------------------------------


async def test_a_member_is_ticked_and_never_faster_than_two_frames_a_period():
    clock = MediaClock()
    observed: list[float] = []
    clock.on_lateness = observed.append
    m = Recorder()
    clock.add(m)
    try:
        await until(lambda: len(m.times) >= 30)
        clock.discard(m)
    finally:
        await clock.stop()
    span = m.times[-1] - m.times[0]
    # the spacing rule: at least 10 ms between frames, however late the loop ran (10 % slack for the
    # moment between the clock's reading of the time and the member's own)
    assert len(m.times) - 1 <= span / 0.009, (len(m.times), span)
    assert len(observed) == clock.ticks == clock.lateness.count == len(m.times)
    assert clock.frames_written == len(m.times)


async def test_discard_stops_the_frames_and_the_clock_parks():
    clock = MediaClock()
    m = Recorder()
    clock.add(m)
    await until(lambda: len(m.times) >= 3)
    clock.discard(m)
    n = len(m.times)
    ticks = clock.ticks
    await asyncio.sleep(0.1)
    assert len(m.times) == n
    assert clock.ticks == ticks  # parked: no empty ticks
    assert clock.running  # parked, not ended: the next call joins without a new task
    again = Recorder()
    clock.add(again)
    await until(lambda: len(again.times) >= 2)
    clock.discard(again)
    await clock.stop()
    assert not clock.running


async def test_a_clock_stopped_and_started_again_serves_without_resynchronising():
    clock = MediaClock()
    m = Recorder()
    clock.add(m)
    await until(lambda: len(m.times) >= 2)
    await clock.stop()
    await asyncio.sleep(1.2)  # the schedule must not owe these: no resync for 1.2 s behind
    n = len(m.times)
    other = Recorder()
    with capture_logs() as logs:
        clock.add(other)  # a new task, with `m` still on the schedule
        try:
            await until(lambda: len(other.times) >= 2 and len(m.times) >= n + 2)
        finally:
            await clock.stop()
    # (a loaded machine may stall the loop past the 100 ms threshold, but not by a second)
    assert not [e for e in logs if e["event"] == "media_clock_resynchronised" and e["behind_ms"] >= 1000]


async def test_a_failing_member_is_removed_logged_and_the_others_go_on():
    class Broken:
        def clock_tick(self) -> None:
            raise RuntimeError("boom")

    clock = MediaClock()
    good, bad = Recorder(), Broken()
    with capture_logs() as logs:
        clock.add(good)
        clock.add(bad)
        try:
            await until(lambda: bad not in clock and len(good.times) >= 5)
            assert good in clock
        finally:
            clock.discard(good)
            await clock.stop()
    failures = [e for e in logs if e["event"] == "media_clock_tick_failed"]
    assert len(failures) == 1 and failures[0]["log_level"] == "error"


async def test_resynchronises_and_logs_how_far_behind_when_the_loop_was_held():
    clock = MediaClock(slots=1, resync_s=0.1)
    m = Recorder()
    with capture_logs() as logs:
        clock.add(m)
        await until(lambda: len(m.times) >= 1)
        time.sleep(0.3)
        n = len(m.times)
        await until(lambda: len(m.times) >= n + 3)
        clock.discard(m)
        await clock.stop()
    assert clock.resyncs >= 1
    resyncs = [e for e in logs if e["event"] == "media_clock_resynchronised"]
    assert resyncs and resyncs[0]["log_level"] == "warning"
    assert resyncs[0]["behind_ms"] >= 280 - 20 and resyncs[0]["calls"] == 1


async def test_the_clock_task_does_not_carry_the_context_of_the_call_that_started_it():
    """Issue 12: the clock's warnings carried the first call's UUID long after that call ended."""
    seen: list[dict[str, object]] = []

    class Peeker:
        def clock_tick(self) -> None:
            seen.append(structlog.contextvars.get_contextvars())

    clock = MediaClock()
    member = Peeker()

    async def first_call() -> None:  # a call's handler binds its UUID, then its first frame starts the clock
        structlog.contextvars.bind_contextvars(call="first-call-uuid")
        clock.add(member)

    await asyncio.get_running_loop().create_task(first_call(), context=contextvars.Context())
    try:
        await until(lambda: len(seen) >= 2)
    finally:
        clock.discard(member)
        await clock.stop()
    assert seen and all("call" not in bound for bound in seen), seen


async def test_stop_waits_for_the_task_and_can_be_repeated():
    clock = MediaClock()
    clock.add(Recorder())
    assert clock.running
    await clock.stop()
    assert not clock.running
    await clock.stop()


async def test_expedite_of_a_member_not_on_the_clock_does_nothing():
    clock = MediaClock()
    assert clock.expedite(Recorder()) is False  # no task yet
    clock.add(Recorder())
    assert clock.expedite(Recorder()) is False  # a task, but not this member
    await clock.stop()


# --- perf: wall-clock precision (run with -m perf on a quiet machine) --------------------------------


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
