"""The media clock: one asyncio task paces the outbound audio of every call.

The pacing rules (an absolute schedule split into phases, joining, catch-up without bursts,
resynchronisation, the expedited first frame of speech, lateness statistics) live in
`bridge.schedule.MediaSchedule`, a pure class that takes `now` as an argument. This module is only its
driver: it reads the monotonic clock, sleeps until the schedule's next wake-up (cut short when a call
joins or is expedited to an earlier tick, or parked with no call at all), and gives each due call exactly
one frame (`Member.clock_tick()`: queued speech, else silence). It also measures how long each wake-up's
writes took, and keeps one broken call from stopping the others.

The task runs in a context of its own, not the context of the call that happened to start it: its log
lines (a resynchronisation, a failing call) would otherwise carry that first call's UUID forever.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Hashable
from typing import Protocol

import structlog

from bridge.protocol import FRAME_MS
from bridge.schedule import Histogram, MediaSchedule

__all__ = ["Histogram", "MediaClock", "Member"]

log = structlog.get_logger(__name__)

def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Member(Hashable, Protocol):
    """What the clock needs of a call: write exactly one frame now (and be usable as a key)."""

    def clock_tick(self) -> None: ...


class MediaClock:
    """One ticking task for all calls. `add()` a call after its UUID, `discard()` it at hang-up.

    The rules (see `MediaSchedule`): the 20 ms period is cut into `slots` phases (2 ms each by default); a
    call is given a phase when it joins, normally the next one, and gets exactly one frame at
    `t0 + n * 20 ms + phase` for every n, so a thousand calls are ten batches of a hundred writes and the
    loop reads sockets between batches. `slots=1` is the plain single-tick clock.
    """

    def __init__(self, frame_s: float = FRAME_MS / 1000, resync_s: float = 0.1, slots: int = 10) -> None:
        self.schedule: MediaSchedule[Member] = MediaSchedule(frame_s=frame_s, resync_s=resync_s, slots=slots)
        self.tick_work = Histogram()
        """How long each wake-up took to write its calls' frames."""
        self.on_lateness: Callable[[float], None] | None = None
        """Optional observer of each wake-up's lateness in seconds (e.g. a Prometheus histogram's observe)."""
        self.on_wake: Callable[[float, float], None] | None = None
        """Optional observer of each wake-up as (now, seconds behind schedule): the server's overload rule.
        Unlike `on_lateness` a resynchronised wake-up reports how far behind it was, not 0."""
        self._sleeper: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the schedule's figures, under the names the rest of the code reads --------------------------

    @property
    def frame_s(self) -> float:
        return self.schedule.frame_s

    @property
    def resync_s(self) -> float:
        return self.schedule.resync_s

    @property
    def slots(self) -> int:
        return self.schedule.slots

    @property
    def lateness(self) -> Histogram:
        """How late each wake-up (one phase's batch) ran against its absolute schedule."""
        return self.schedule.lateness

    @property
    def ticks(self) -> int:
        return self.schedule.ticks

    @property
    def resyncs(self) -> int:
        return self.schedule.resyncs

    @property
    def frames_written(self) -> int:
        return self.schedule.frames_written

    @property
    def max_calls_seen(self) -> int:
        return self.schedule.max_calls_seen

    def __len__(self) -> int:
        return len(self.schedule)

    def __contains__(self, member: object) -> bool:
        return member in self.schedule

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- membership -----------------------------------------------------------------------------------

    def add(self, member: Member) -> None:
        """Join the clock: `member.clock_tick()` runs once per frame period from the next free phase on."""
        schedule = self.schedule
        if member in schedule:
            return
        now = time.monotonic()
        if not self.running:
            schedule.resume(now)  # whatever the last task left unserved is not owed to anyone
            schedule.add(member, now)
            # A clean context: the task outlives the call whose first frame started it (issue 12).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="media-clock", context=contextvars.Context())
        elif schedule.add(member, now):
            self._interrupt()

    def expedite(self, member: Member) -> bool:
        """Bring a member's next frame forward (`MediaSchedule.expedite`); returns whether it moved."""
        if not self.running:
            return False
        moved = self.schedule.expedite(member, time.monotonic())
        if moved:
            self._interrupt()
        return moved

    def discard(self, member: Member) -> None:
        """Leave the clock (idempotent). Takes effect before the next wake-up."""
        self.schedule.discard(member)

    async def stop(self) -> None:
        """Stop the task and wait for it; a cancellation of the caller itself still propagates."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))
            if not task.cancelled():
                task.result()  # the task ended by itself: that is a bug, and it surfaces here

    # --- statistics -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        stats = self.schedule.stats()
        stats["tick_work"] = self.tick_work.summary_ms()
        return stats

    def reset_stats(self) -> None:
        self.schedule.reset_stats()
        self.tick_work.reset()

    # --- the task -------------------------------------------------------------------------------------

    def _interrupt(self) -> None:
        """The schedule's next wake-up moved earlier: end the current sleep so the task re-reads it."""
        sleeper = self._sleeper
        if sleeper is not None and not sleeper.done():
            sleeper.set_result(None)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, seconds: float | None) -> None:
        """Sleep `seconds` (None: until interrupted); `_interrupt` ends it early."""
        sleeper = self._sleeper = loop.create_future()
        timer = loop.call_later(seconds, _wake_up, sleeper) if seconds is not None else None
        try:
            await sleeper
        finally:
            if timer is not None:
                timer.cancel()
            self._sleeper = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        mono = time.monotonic
        schedule = self.schedule
        next_wake = schedule.next_wake
        take_due = schedule.take_due
        work = self.tick_work
        while True:
            wake = next_wake()
            if wake is None:  # nobody on the clock: park until a call joins
                await self._sleep(loop, None)
                continue
            now = mono()
            tick = take_due(now)
            if tick is None:  # not due yet (woken early by more than the schedule's tolerance)
                await self._sleep(loop, wake - now)
                continue
            if tick.behind:
                log.warning("media_clock_resynchronised", behind_ms=round(tick.behind * 1000, 1),
                            calls=len(schedule))
            observer = self.on_lateness
            if observer is not None:
                observer(tick.late)
            watcher = self.on_wake
            if watcher is not None:
                watcher(now, tick.behind or tick.late)
            for member in tick.members:
                try:
                    member.clock_tick()
                except Exception:  # one broken call must not stop the others' audio
                    log.exception("media_clock_tick_failed", action="removed from the clock")
                    schedule.discard(member)
            work.observe(mono() - now)
