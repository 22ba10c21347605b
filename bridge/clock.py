"""The media clock: one task paces the outbound audio of every call.

A phone has no buffer to absorb our mistakes: Asterisk forwards each AudioSocket message the moment it reads
it, so a burst becomes a burst of RTP and a late frame becomes a gap. One task therefore ticks on an absolute
schedule (`t0 + n * 20 ms`, never `sleep(0.02)` after the work, which drifts) and at each tick gives every
live call exactly one frame (`Member.clock_tick()`: queued speech, else silence). The period is split into
phases (`slots`) so the calls' writes are spread over it rather than issued in one batch.

When the loop was held up, missed ticks are caught up no faster than one every half frame (so a caller never
gets more than two frames inside 20 ms); when it fell more than `resync_s` behind, the missed ticks are
dropped and the schedule restarts from now (resynchronised, not burst). With no call the task parks, and the
first call to join gets its first frame at once.

Speech that starts after silence need not wait up to a whole period for the call's phase: `expedite()`
moves the call to the soonest phase at least half a period after its last frame (the same spacing the
catch-up rule allows), so the first word goes out within about 10 ms of being ready instead of up to 20.

The clock measures itself: lateness of each tick against its schedule and the time the tick's writes took, in
fixed-bin histograms that cost O(1) per tick and give percentiles over a whole run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from bridge.protocol import FRAME_MS

__all__ = ["MediaClock", "Member", "Histogram"]

log = structlog.get_logger(__name__)


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Member(Protocol):
    """What the clock needs of a call: write exactly one frame now."""

    def clock_tick(self) -> None: ...


class Histogram:
    """Seconds in 0.1 ms bins up to `top_s` (plus an overflow bin): O(1) to record, percentiles on demand."""

    __slots__ = ("_bins", "_scale", "count", "total", "max")

    def __init__(self, top_s: float = 0.5, resolution_s: float = 0.0001) -> None:
        self._scale = 1.0 / resolution_s
        self._bins = [0] * (int(top_s * self._scale) + 2)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        if seconds < 0.0:
            seconds = 0.0
        i = int(seconds * self._scale)
        bins = self._bins
        bins[i if i < len(bins) else -1] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, p: float) -> float:
        """Upper edge of the bin holding the p-th percentile (0 < p <= 100), in seconds; 0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, int(round(p / 100.0 * self.count)))
        seen = 0
        for i, n in enumerate(self._bins):
            seen += n
            if seen >= rank:
                return min((i + 1) / self._scale, self.max) if i < len(self._bins) - 1 else self.max
        return self.max

    def reset(self) -> None:
        self._bins = [0] * len(self._bins)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def summary_ms(self) -> dict[str, float]:
        return {
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "max_ms": round(self.max * 1000, 2),
            "mean_ms": round(self.total / self.count * 1000, 3) if self.count else 0.0,
        }


class MediaClock:
    """One ticking task for all calls. `add()` a call after its UUID, `discard()` it at hang-up.

    The 20 ms period is cut into `slots` phases (2 ms each by default). A call is given a phase when it
    joins, normally the next one (so its silence starts within a couple of milliseconds of its UUID), and
    gets exactly one frame at `t0 + n * 20 ms + phase` for every n. Spreading calls over phases keeps
    each wake-up's work small (a thousand calls are ten batches of a hundred writes, not one batch of a
    thousand), so the last call of a batch is not several milliseconds behind the first, and the loop
    reads sockets between batches. `slots=1` is the plain single-tick clock.
    """

    def __init__(self, frame_s: float = FRAME_MS / 1000, resync_s: float = 0.1, slots: int = 10) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.frame_s = frame_s
        self.resync_s = resync_s
        self.slots = slots
        self.lateness = Histogram()
        """How late each wake-up (one phase's batch) ran against its absolute schedule."""
        self.tick_work = Histogram()
        """How long each wake-up took to write its calls' frames."""
        self.on_lateness: Callable[[float], None] | None = None
        """Optional observer of each wake-up's lateness in seconds (e.g. a Prometheus histogram's observe)."""
        self.ticks = 0
        self.resyncs = 0
        self.frames_written = 0
        self.max_calls_seen = 0
        self._phase: dict[Member, int] = {}
        self._slots: list[dict[Member, None]] = [{} for _ in range(slots)]
        self._snapshots: list[tuple[Member, ...]] = [() for _ in range(slots)]
        self._dirty = [False] * slots
        self._last_tick = [float("-inf")] * slots
        """When each phase last wrote its calls' frames (monotonic seconds)."""
        self._t0 = 0.0
        self._k = 0
        """The next tick the loop serves (it may be sleeping until then, over phases nobody is in)."""
        self._served = -1
        """The last tick served: ticks are served in order, each once."""
        self._sleeper: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._phase)

    def __contains__(self, member: object) -> bool:
        return member in self._phase

    def add(self, member: Member) -> None:
        """Join the clock: `member.clock_tick()` runs once per frame period from the next free phase on."""
        if member in self._phase:
            return
        running = bool(self._phase) and self._task is not None and not self._task.done()
        start = self._first_open_tick() if running else self._k
        slot, index = self._choose_slot(start)
        self._phase[member] = slot
        self._slots[slot][member] = None
        self._dirty[slot] = True
        if len(self._phase) > self.max_calls_seen:
            self.max_calls_seen = len(self._phase)
        if running:
            self._replan(index)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="media-clock")

    def expedite(self, member: Member) -> bool:
        """Bring a member's next frame forward: the soonest phase at least half a period after its last one.

        For speech that starts after silence (the call decides what counts as that): instead of waiting for
        its own phase, up to a whole period away, the call moves to the earliest phase whose next tick is at least
        `frame_s / 2` after the call's previous frame, so no two of its frames are ever closer than that
        (at most two inside any 20 ms, as when the clock catches up). Phases at or above the average fill
        plus one are passed over, keeping the batches even. Returns whether the member moved.
        """
        slot = self._phase.get(member)
        if slot is None or self._task is None or self._task.done():
            return False
        nslots = self.slots
        start = self._first_open_tick()
        regular = start + (slot - start) % nslots  # when this member's own phase comes round
        earliest = self._last_tick[slot] + self.frame_s / 2
        first = max(start, self._tick_at_or_after(earliest))
        limit = -(-len(self._phase) // nslots) + 1
        for j in range(first, regular):
            new = j % nslots
            if len(self._slots[new]) < limit:
                del self._slots[slot][member]
                self._slots[new][member] = None
                self._dirty[slot] = self._dirty[new] = True
                self._phase[member] = new
                self._replan(j)
                return True
        return False

    def _tick_at_or_after(self, when: float) -> int:
        """The index of the first tick scheduled at or after `when` (monotonic seconds)."""
        if when == float("-inf"):
            return 0
        step = self.frame_s / self.slots
        return -int(-(when - self._t0) // step)  # ceil

    def _first_open_tick(self) -> int:
        """The first tick a member may still be given: not served yet, and not already in the past unless
        the loop is behind (then the loop's own next tick, which it will serve late)."""
        return max(self._served + 1, min(self._k, self._tick_at_or_after(time.monotonic())))

    def _replan(self, index: int) -> None:
        """A member now ticks at `index`, before the tick the loop sleeps toward: wake it to serve that first."""
        if index < self._k:
            self._k = index
            sleeper = self._sleeper
            if sleeper is not None and not sleeper.done():
                sleeper.set_result(None)

    def discard(self, member: Member) -> None:
        """Leave the clock (idempotent). Takes effect before the next wake-up."""
        slot = self._phase.pop(member, None)
        if slot is not None:
            del self._slots[slot][member]
            self._dirty[slot] = True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def stats(self) -> dict[str, object]:
        return {
            "ticks": self.ticks,
            "resyncs": self.resyncs,
            "frames": self.frames_written,
            "calls": len(self._phase),
            "max_calls": self.max_calls_seen,
            "lateness": self.lateness.summary_ms(),
            "tick_work": self.tick_work.summary_ms(),
        }

    def reset_stats(self) -> None:
        self.lateness.reset()
        self.tick_work.reset()
        self.ticks = self.resyncs = self.frames_written = 0
        self.max_calls_seen = len(self._phase)

    def _choose_slot(self, start: int) -> tuple[int, int]:
        """The soonest phase from tick `start` on that is at most a quarter fuller than the average (plus
        one): a joining call's first frame goes out within a phase or two rather than waiting for the one
        emptiest phase, and batches stay within 25 % of each other. Returns (phase, its tick index)."""
        slots = self._slots
        limit = len(self._phase) * 5 // (4 * self.slots) + 1  # before this one joins
        for index in range(start, start + self.slots):
            if len(slots[index % self.slots]) <= limit:
                return index % self.slots, index
        return start % self.slots, start  # pragma: no cover - some slot is always at or below the average

    async def _sleep(self, seconds: float) -> None:
        """`asyncio.sleep`, but `_replan` can end it early."""
        loop = asyncio.get_running_loop()
        sleeper = self._sleeper = loop.create_future()
        timer = loop.call_later(seconds, _wake_up, sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleeper = None

    async def _run(self) -> None:
        mono = time.monotonic
        step = self.frame_s / self.slots
        min_gap = self.frame_s / 2
        nslots = self.slots
        last = self._last_tick
        t0 = self._t0 = mono()
        self._k = 0
        self._served = -1
        while True:
            if not self._phase:
                self._wake.clear()
                await self._wake.wait()
                t0 = self._t0 = mono() - self._k * step  # restart the schedule now, phases kept
                continue
            k = self._k
            slot = k % nslots
            if not self._slots[slot]:
                self._k = k + 1
                continue
            target = t0 + k * step
            due = max(target, last[slot] + min_gap)
            now = mono()
            # uvloop's timers have 1 ms granularity and may fire a little early: sleep again if so.
            while due - now > 0.0002 and self._k == k:
                await self._sleep(due - now)
                now = mono()
            if self._k != k:  # replanned while asleep: a call joined (or was expedited) to an earlier tick
                continue
            if not self._slots[slot]:  # its calls left while we slept
                self._k = k + 1
                continue
            late = now - target
            if late > self.resync_s:
                self.resyncs += 1
                log.warning("media clock resynchronised", behind_ms=round(late * 1000, 1), calls=len(self._phase))
                t0 = self._t0 = now - k * step
                late = 0.0
            self.lateness.observe(late)
            if self.on_lateness is not None:
                self.on_lateness(late)
            self._tick(slot)
            last[slot] = now
            self._served = k
            self._k = k + 1
            self.tick_work.observe(mono() - now)

    def _tick(self, slot: int) -> None:
        if self._dirty[slot]:
            self._snapshots[slot] = tuple(self._slots[slot])
            self._dirty[slot] = False
        members = self._snapshots[slot]
        for member in members:
            try:
                member.clock_tick()
            except Exception:  # one broken call must not stop the others' audio
                log.exception("media clock: a call failed to tick; removing it")
                self.discard(member)
        self.ticks += 1
        self.frames_written += len(members)
