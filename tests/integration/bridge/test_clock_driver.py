"""The media clock's driver on a real event loop.

The pacing rules themselves are tested exactly, with a fake clock, in tests/unit/test_schedule.py. Here:
that the asyncio task drives them (ticks flow, parks with nobody, survives a broken call, logs a
resynchronisation, runs in a context of its own). The default tests assert only what a loaded machine
cannot break (lower bounds on lateness that the test itself causes, upper bounds on frame counts that the
spacing rule guarantees); the wall-clock precision tests are in tests/perf/test_clock_timing.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

import structlog
from structlog.testing import capture_logs

from bridge.clock import MediaClock
from support.clock import Recorder, until

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
