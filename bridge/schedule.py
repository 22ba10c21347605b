"""The media clock's rules without the clock: which calls are due now, and when the next wake-up is.

A phone has no buffer to absorb our mistakes: Asterisk forwards each AudioSocket message the moment it reads
it, so a burst becomes a burst of RTP and a late frame becomes a gap. The rules that keep the outbound audio
paced live here, in a class that never reads the time, sleeps or touches a socket: every decision takes
`now` (monotonic seconds) as an argument. `bridge.clock.MediaClock` drives it from one asyncio task; the
unit tests drive it with a fake clock, so each rule is tested exactly instead of against a busy machine's
wall time.

The rules:

- **Absolute schedule, split into phases.** Tick `k` is due at `t0 + k * step`, `step = frame_s / slots`,
  and serves phase `k % slots` (never `sleep(frame_s)` after the work, which drifts). Each member belongs to
  one phase and gets exactly one frame per period, so a thousand calls are ten batches of a hundred writes,
  not one batch of a thousand. Ticks of empty phases are skipped without a wake-up.
- **Joining.** A member joins the soonest phase, from the first tick still open, holding at most a quarter
  more than the average (plus one): its first frame goes out within a phase or two, and batches stay even.
  On an idle schedule (no member) the schedule restarts so that the joining member's first tick is `now`.
- **Catch-up spacing.** When the driver was held up, missed ticks are still served (nothing is lost) but a
  phase is never served sooner than `frame_s / 2` after its previous serving: a member never gets more than
  two frames inside any `frame_s`.
- **Resynchronisation.** A tick served more than `resync_s` after its scheduled time is not caught up: the
  schedule restarts from `now` (the missed frames are dropped), and the catch-up spacing still holds, so a
  resynchronisation never bursts either.
- **Expedited first frame.** Speech that starts after silence need not wait up to a period for its
  member's phase: `expedite()` moves the member to the soonest phase whose tick is at least `frame_s / 2`
  after the member's previous frame, passing over phases already fuller than the average plus one.
- **Statistics.** The lateness of every served tick against its schedule, in a fixed-bin histogram (O(1)
  per tick, percentiles over a whole run), and counts of ticks, frames, resynchronisations and members.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["Histogram", "MediaSchedule", "Tick"]

M = TypeVar("M", bound=Hashable)

_ROUNDING = 1e-6
"""A millionth of a phase (2 ns): below any timer's resolution, above floating-point error."""


class Histogram:
    """Seconds in 0.1 ms bins up to `top_s` (plus an overflow bin): O(1) to record, percentiles on demand."""

    __slots__ = ("_bins", "_scale", "count", "max", "total")

    def __init__(self, top_s: float = 0.5, resolution_s: float = 0.0001) -> None:
        if top_s <= 0 or resolution_s <= 0:
            raise ValueError(f"top_s and resolution_s must be positive, got {top_s} and {resolution_s}")
        self._scale = 1.0 / resolution_s
        self._bins = [0] * (int(top_s * self._scale) + 2)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        i = int(seconds * self._scale)
        bins = self._bins
        bins[i if i < len(bins) else -1] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def percentile(self, p: float) -> float:
        """Upper edge of the bin holding the p-th percentile (0 < p <= 100), in seconds; 0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, round(p / 100.0 * self.count))
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


class Tick(NamedTuple, Generic[M]):
    """One served tick: the members to give a frame now, and how the tick stood against its schedule."""

    members: tuple[M, ...]
    late: float
    """Seconds after its scheduled time that the tick was served (0 after a resynchronisation; slightly
    negative when served within the tolerance before it, which the histogram records as 0)."""
    behind: float
    """When the tick resynchronised the schedule: how far behind it was (seconds, > `resync_s`); else 0."""


class MediaSchedule(Generic[M]):
    """The pacing rules of one media clock (see the module docstring), as a pure state machine.

    The driver's loop: `wake = next_wake()`; `None` means nobody is on the schedule (wait until `add`);
    else sleep until `wake` and call `take_due(now)`, which returns the tick to serve (its members each get
    one frame) or `None` when woken too early. `add()` and `expedite()` return True when the driver must
    re-read `next_wake()` because the next tick moved earlier than the one it sleeps toward.
    """

    def __init__(
        self,
        frame_s: float = 0.02,
        resync_s: float = 0.1,
        slots: int = 10,
        tolerance_s: float = 0.001,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if not frame_s > 0:
            raise ValueError(f"frame_s must be positive, got {frame_s}")
        if not resync_s > 0:
            raise ValueError(f"resync_s must be positive, got {resync_s}")
        if not 0 <= tolerance_s < frame_s / slots:
            raise ValueError(f"tolerance_s must be at least 0 and below one phase ({frame_s / slots} s), "
                             f"got {tolerance_s}")
        self.frame_s = frame_s
        self.resync_s = resync_s
        self.slots = slots
        self.tolerance_s = tolerance_s
        """How early a tick may be served: timers may fire a little early (uvloop's have millisecond
        resolution and fired up to ~0.5 ms early about a third of the time), and sleeping again for the
        fraction would cost another turn of the event loop (an `epoll_wait`, a timer, a future) hundreds of
        times a second, for a frame that may as well leave a fraction of a millisecond early."""
        self.step = frame_s / slots
        self.min_gap = frame_s / 2
        """No phase is served sooner than this after its previous serving: at most two frames per period."""
        self.lateness = Histogram()
        """How late each served tick (one phase's batch) ran against its absolute schedule."""
        self.ticks = 0
        self.resyncs = 0
        self.frames_written = 0
        self.max_calls_seen = 0
        self._phase: dict[M, int] = {}
        self._slots: list[dict[M, None]] = [{} for _ in range(slots)]
        self._snapshots: list[tuple[M, ...]] = [() for _ in range(slots)]
        self._dirty = [False] * slots
        self._last = [-math.inf] * slots
        """When each phase was last served (`now` of its tick)."""
        self._moved_from: dict[M, float] = {}
        """For a member expedited to another phase: when its previous phase last served it. Its new phase
        may not have served it yet (nor anyone: `-inf`), so that phase's time alone would let a second
        `expedite` move it right after its last frame."""
        self._t0 = 0.0
        self._k = 0
        """The next tick to serve (the driver may be sleeping toward it)."""
        self._served = -1
        """The last tick served: ticks are served in order, each once."""

    # --- membership ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._phase)

    def __contains__(self, member: object) -> bool:
        return member in self._phase

    def phase_of(self, member: M) -> int | None:
        """The member's phase (0 .. slots - 1), or None when it is not on the schedule."""
        return self._phase.get(member)

    def phase_sizes(self) -> list[int]:
        """How many members each phase holds."""
        return [len(s) for s in self._slots]

    def add(self, member: M, now: float) -> bool:
        """Join from the soonest open tick of a phase not much fuller than average. Idempotent.

        Returns True when the driver must wake up to re-plan: the member's first tick comes before the tick
        it sleeps toward, or the schedule was idle (then it restarts so that the first tick is `now`).
        """
        if member in self._phase:
            return False
        idle = not self._phase
        if idle:
            self.resume(now)
        slot, index = self._choose_slot(self._first_open_tick(now))
        self._phase[member] = slot
        self._slots[slot][member] = None
        self._dirty[slot] = True
        self.max_calls_seen = max(self.max_calls_seen, len(self._phase))
        return self._replan(index) or idle

    def discard(self, member: M) -> None:
        """Leave the schedule (idempotent): the member is in no tick served from now on."""
        slot = self._phase.pop(member, None)
        self._moved_from.pop(member, None)
        if slot is not None:
            del self._slots[slot][member]
            self._dirty[slot] = True

    def expedite(self, member: M, now: float) -> bool:
        """Bring a member's next frame forward: the soonest phase at least half a period after its last one.

        For speech that starts after silence (the caller of this method decides what counts as that):
        instead of waiting for its own phase, up to a whole period away, the member moves to the earliest
        phase whose next tick is due at least `frame_s / 2` after the member's previous frame (its
        tolerance included, so the frames are never closer than that: at most two inside any period, as
        when the schedule catches up). Phases holding the average (rounded up) plus one or more are passed
        over, keeping the batches even. Returns whether the member moved; the driver must then re-plan.
        """
        slot = self._phase.get(member)
        if slot is None:
            return False
        nslots = self.slots
        start = self._first_open_tick(now)
        regular = start + (slot - start) % nslots  # when this member's own phase comes round
        previous = max(self._last[slot], self._moved_from.get(member, -math.inf))  # its last frame, at most
        first = max(start, self._tick_at_or_after(previous + self.min_gap + self.tolerance_s))
        limit = -(-len(self._phase) // nslots) + 1
        for j in range(first, regular):
            new = j % nslots
            if len(self._slots[new]) < limit:
                del self._slots[slot][member]
                self._slots[new][member] = None
                self._dirty[slot] = self._dirty[new] = True
                self._phase[member] = new
                self._moved_from[member] = previous
                self._replan(j)
                return True
        return False

    def resume(self, now: float) -> None:
        """Restart the schedule so that its next tick is due `now` (phases kept, the spacing rule too).

        For a driver that was not running: the ticks it missed are not owed to anyone."""
        self._t0 = now - self._k * self.step

    # --- serving ------------------------------------------------------------------------------------

    def next_wake(self) -> float | None:
        """When the next tick is due (monotonic seconds), or None when nobody is on the schedule."""
        if not self._phase:
            return None
        slots = self._slots
        nslots = self.slots
        k = self._k
        while not slots[k % nslots]:  # some phase is not empty: at most slots - 1 steps
            k += 1
        self._k = k
        due = self._t0 + k * self.step
        last = self._last[k % nslots] + self.min_gap
        return max(due, last)

    def take_due(self, now: float) -> Tick[M] | None:
        """Serve the next tick if it is due at `now` (within the tolerance): its members each get a frame.

        Returns None when it is not due yet (the driver woke early or was re-planned: read `next_wake()`).
        A tick more than `resync_s` late resynchronises the schedule from `now` instead of being caught up.
        """
        due = self.next_wake()
        if due is None:
            return None
        k = self._k
        slot = k % self.slots
        target = self._t0 + k * self.step
        if target - now > self.tolerance_s or self._last[slot] + self.min_gap > now:
            return None
        late = now - target
        behind = 0.0
        if late > self.resync_s:
            self.resyncs += 1
            behind = late
            self._t0 = now - k * self.step
            late = 0.0
        self.lateness.observe(late)
        if self._dirty[slot]:
            self._snapshots[slot] = tuple(self._slots[slot])
            self._dirty[slot] = False
        members = self._snapshots[slot]
        self._last[slot] = now
        self._served = k
        self._k = k + 1
        self.ticks += 1
        self.frames_written += len(members)
        return Tick(members, late, behind)

    # --- statistics ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        return {
            "ticks": self.ticks,
            "resyncs": self.resyncs,
            "frames": self.frames_written,
            "calls": len(self._phase),
            "max_calls": self.max_calls_seen,
            "lateness": self.lateness.summary_ms(),
        }

    def reset_stats(self) -> None:
        self.lateness.reset()
        self.ticks = self.resyncs = self.frames_written = 0
        self.max_calls_seen = len(self._phase)

    # --- the rules' arithmetic ----------------------------------------------------------------------

    def _tick_at_or_after(self, when: float) -> int:
        """The index of the first tick scheduled at or after `when` (a tick a rounding error before `when`
        counts as at it: `t0 + k * step` is not exact in floating point)."""
        if when == -math.inf:
            return 0
        return math.ceil((when - self._t0) / self.step - _ROUNDING)

    def _first_open_tick(self, now: float) -> int:
        """The first tick a member may still be given: not served yet, and not already in the past unless
        the driver is behind (then the driver's own next tick, which it will serve late)."""
        return max(self._served + 1, min(self._k, self._tick_at_or_after(now)))

    def _choose_slot(self, start: int) -> tuple[int, int]:
        """The soonest phase from tick `start` on that is at most a quarter fuller than the average (plus
        one): a joining member's first frame goes out within a phase or two rather than waiting for the one
        emptiest phase, and batches stay within 25 % of each other. Returns (phase, its tick index)."""
        slots = self._slots
        nslots = self.slots
        limit = (len(self._phase) * 5) // (4 * nslots) + 1  # before this one joins
        for index in range(start, start + nslots):
            if len(slots[index % nslots]) <= limit:
                return index % nslots, index
        raise AssertionError("unreachable: some phase always holds at most the average")  # pragma: no cover

    def _replan(self, index: int) -> bool:
        """A member now ticks at `index`: if that is before the tick the driver heads for, head there."""
        if index < self._k:
            self._k = index
            return True
        return False
