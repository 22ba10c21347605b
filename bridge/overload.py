"""When the media clock cannot keep its schedule: the rule that pauses admission, without the clock.

A bridge that admits more calls than its core can pace does not degrade one call: every call on the clock
hears the same late, bunched frames (issue 13 measured 1,300 calls on a core that paces ~1,000: realtime
ratios 0.67-1.13, first audio p99 9 s). The only fix that protects the calls already up is to take no more
until the clock keeps time again. The sign is the clock's own lateness: each wake-up (one 2 ms phase's
batch of writes) knows how late it ran against its absolute schedule (`bridge.schedule.MediaSchedule`).

The rule (`OverloadDetector`), on the wake-ups of the last `window_s`:

- **Enter** when at least `min_samples` wake-ups were seen and at least `enter_fraction` of them ran
  `late_s` or more behind schedule, spread over at least `enter_buckets` of the window's `bucket_s` slices,
  while at least `min_calls` calls are on the clock. One stall of the loop (a burst of call set-ups or
  hang-ups, a page-fault storm as the heap grows, the hypervisor taking the core) makes every phase due
  during it late, and the catch-up after it: a few dozen late wake-ups, but within one or two slices, and
  then the clock keeps time again; a core that is saturated makes wake-ups late in every slice. Below
  `min_calls` the lateness is not the calls' doing (another process on the core, a busy machine) and
  refusing calls would not cure it.
- **Enter** also when the event loop's thread used `busy_enter` of a core or more over the window (its CPU
  time, sampled by the driver once per `bucket_s`), with `min_calls` calls up: lateness is the sign that
  the core is already lost, and the calls admitted while it builds up start late; the loop's own CPU says
  the core is nearly full before any frame is late, so the calls already up never see it. It cannot see a
  neighbour taking the core (the bridge's CPU then stays low while its frames are late): the lateness rule
  covers that.
- **Leave** (hysteresis) only once the window has been calm, at most `exit_fraction` of its wake-ups late
  and the loop's CPU at most `busy_exit`, for `calm_s` without a break: admission resumes at a level well
  below the one that stopped it, and not the instant the calls that overloaded the core stop being late.

It is a pure state machine: every method takes `now` (monotonic seconds), so the rule is tested with a
fake clock. `observe()` costs O(1) per wake-up (counts per `bucket_s` slice of the window, summed as they
rotate). A window with no wake-ups at all (no call left on the clock) is calm: the server asks
`overloaded(now)` on a timer while admission is paused, so admission resumes even when every call ends.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["OverloadDetector", "OverloadRule"]


@dataclasses.dataclass(frozen=True, slots=True)
class OverloadRule:
    """The thresholds of `OverloadDetector` (see the module docstring for what each one means)."""

    late_s: float = 0.010
    """A wake-up this late or later counts as late: half a frame period, far above a paced clock's ~1 ms."""
    window_s: float = 0.3
    enter_fraction: float = 0.2
    exit_fraction: float = 0.02
    calm_s: float = 2.0
    min_samples: int = 25
    min_calls: int = 50
    bucket_s: float = 0.05
    enter_buckets: int = 4
    """Slices of the window that must each hold a late wake-up to enter: one stall and its catch-up fill one
    or two (measured at 1,000 calls: a 60 ms stall at the end of a set-up burst, 26 late wake-ups in 0.3 s,
    paused admission with the core half idle)."""
    busy_enter: float = 0.0
    """The event loop's CPU share (of one core) over the window at which admission pauses; 0: off."""
    busy_exit: float = 0.0
    """The share at or below which it may resume (with calm lateness); at most `busy_enter`."""

    def __post_init__(self) -> None:
        if not self.late_s > 0:
            raise ValueError(f"late_s must be positive, got {self.late_s}")
        if not 0 < self.bucket_s <= self.window_s:
            raise ValueError(f"bucket_s must be positive and at most window_s ({self.window_s}), got {self.bucket_s}")
        if not 0 <= self.exit_fraction < self.enter_fraction <= 1:
            raise ValueError("need 0 <= exit_fraction < enter_fraction <= 1, got "
                             f"{self.exit_fraction} and {self.enter_fraction}")
        if not 0 <= self.busy_exit <= self.busy_enter <= 1:
            raise ValueError(f"need 0 <= busy_exit <= busy_enter <= 1, got {self.busy_exit} and {self.busy_enter}")
        if not 1 <= self.enter_buckets <= max(1, round(self.window_s / self.bucket_s)):
            raise ValueError(f"enter_buckets must be between 1 and the window's {self.window_s / self.bucket_s:g} "
                             f"slices, got {self.enter_buckets}")
        if self.calm_s < 0 or self.min_samples < 1 or self.min_calls < 0:
            raise ValueError(f"calm_s and min_calls must be >= 0 and min_samples >= 1, got {self.calm_s}, "
                             f"{self.min_calls} and {self.min_samples}")


class OverloadDetector:
    """Decides from the clock's wake-up lateness whether new calls must be refused (see the module docstring).

    The driver calls `observe(now, late, calls)` after each wake-up of the media clock; it returns True
    when the state changed (entered or left overload). `overloaded(now)` re-evaluates the exit without a
    sample (the server asks it on a timer while paused). `since` is when the current overload began.
    """

    __slots__ = (
        "_buckets",
        "_calm_since",
        "_cpu",
        "_current",
        "_late",
        "_nbuckets",
        "_overloaded",
        "_total",
        "episodes",
        "rule",
        "since",
    )

    def __init__(self, rule: OverloadRule | None = None) -> None:
        self.rule = rule or OverloadRule()
        self._nbuckets = max(1, round(self.rule.window_s / self.rule.bucket_s))
        self._buckets: list[list[int]] = [[0, 0] for _ in range(self._nbuckets)]
        """Per slice of the window: [wake-ups, late wake-ups]; slice i holds bucket numbers == i mod n."""
        self._current = -math.inf
        """The bucket number (floor(now / bucket_s)) the newest slice holds."""
        self._total = 0
        self._late = 0
        self._overloaded = False
        self._calm_since: float | None = None
        self._cpu: list[tuple[float, float]] = []
        """(now, the loop thread's CPU seconds) samples of the last window, oldest first (one per bucket)."""
        self.since: float | None = None
        self.episodes = 0

    @property
    def is_overloaded(self) -> bool:
        """The state as of the last `observe` / `overloaded` call."""
        return self._overloaded

    def window(self, now: float) -> tuple[int, int]:
        """(wake-ups, late wake-ups) seen in the window ending at `now`."""
        self._rotate(now)
        return self._total, self._late

    def busy(self, now: float) -> float | None:
        """The loop thread's CPU share of one core over the window ending at `now` (None: too few samples)."""
        samples = self._cpu
        while samples and samples[0][0] < now - self.rule.window_s:
            del samples[0]
        if len(samples) < 2 or samples[-1][0] - samples[0][0] < self.rule.window_s / 2:
            return None
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        return (c1 - c0) / (t1 - t0)

    def observe(self, now: float, late: float, calls: int, cpu_s: float | None = None) -> bool:
        """Record one wake-up `late` seconds behind schedule with `calls` calls on the clock, and the loop
        thread's CPU seconds so far when the driver sampled them (about once per `bucket_s`); True on a
        change."""
        if cpu_s is not None:
            self._cpu.append((now, cpu_s))
        self._rotate(now)
        bucket = self._buckets[int(self._current % self._nbuckets)]
        bucket[0] += 1
        self._total += 1
        if late >= self.rule.late_s:
            bucket[1] += 1
            self._late += 1
        if not self._overloaded:
            rule = self.rule
            if calls >= rule.min_calls and (
                    (self._total >= rule.min_samples and self._late >= rule.enter_fraction * self._total
                     and self._late_buckets() >= rule.enter_buckets)
                    or (rule.busy_enter and cpu_s is not None and (self.busy(now) or 0.0) >= rule.busy_enter)):
                self._overloaded = True
                self._calm_since = None
                self.since = now
                self.episodes += 1
                return True
            return False
        return self._check_exit(now)

    def overloaded(self, now: float) -> bool:
        """Whether admission stays paused at `now` (leaves overload once calm long enough)."""
        if self._overloaded:
            self._rotate(now)
            self._check_exit(now)
        return self._overloaded

    def _check_exit(self, now: float) -> bool:
        busy = self.busy(now) if self.rule.busy_enter else None
        if self._late > self.rule.exit_fraction * self._total or (busy is not None and busy > self.rule.busy_exit):
            self._calm_since = None
            return False
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since >= self.rule.calm_s:
            self._overloaded = False
            self._calm_since = None
            self.since = None
            return True
        return False

    def _late_buckets(self) -> int:
        """Slices of the window holding a late wake-up (asked only once the late fraction is crossed)."""
        return sum(1 for bucket in self._buckets if bucket[1])

    def _rotate(self, now: float) -> None:
        """Drop the slices that fell out of the window ending at `now` (time never runs backwards here)."""
        number = math.floor(now / self.rule.bucket_s)
        current = self._current
        if number <= current:
            return
        n = self._nbuckets
        if number - current >= n:  # the whole window is older than `now`'s
            for bucket in self._buckets:
                bucket[0] = bucket[1] = 0
            self._total = self._late = 0
        else:
            for k in range(int(current) + 1, number + 1):
                bucket = self._buckets[k % n]
                self._total -= bucket[0]
                self._late -= bucket[1]
                bucket[0] = bucket[1] = 0
        self._current = number
