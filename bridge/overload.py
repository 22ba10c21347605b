"""When the media clock cannot keep its schedule: the rule that pauses admission, without the clock.

A bridge that admits more calls than its core can pace does not degrade one call: every call on the clock
hears the same late, bunched frames (issue 13 measured 1,300 calls on a core that paces ~1,000: realtime
ratios 0.67-1.13, first audio p99 9 s). The only fix that protects the calls already up is to take no more
until the clock keeps time again. The sign is the clock's own lateness: each wake-up (one 2 ms phase's
batch of writes) knows how late it ran against its absolute schedule (`bridge.schedule.MediaSchedule`).

The rule (`OverloadDetector`), on the wake-ups of the last `window_s`:

- **Enter** when at least `min_samples` wake-ups were seen and at least `enter_fraction` of them ran
  `late_s` or more behind schedule, while at least `min_calls` calls are on the clock. One slow wake-up (a
  garbage-collector pass, a burst of call set-ups) is a few per cent of a window and does not count; a
  core that is saturated makes nearly every wake-up late within a window. Below `min_calls` the lateness
  is not the calls' doing (another process on the core, a busy machine) and refusing calls would not cure
  it.
- **Leave** (hysteresis) only once the window has been calm, at most `exit_fraction` of its wake-ups late,
  for `calm_s` without a break: admission resumes at a level well below the one that stopped it, and not
  the instant the calls that overloaded the core have stopped being late.

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

    def __post_init__(self) -> None:
        if not self.late_s > 0:
            raise ValueError(f"late_s must be positive, got {self.late_s}")
        if not 0 < self.bucket_s <= self.window_s:
            raise ValueError(f"bucket_s must be positive and at most window_s ({self.window_s}), got {self.bucket_s}")
        if not 0 <= self.exit_fraction < self.enter_fraction <= 1:
            raise ValueError("need 0 <= exit_fraction < enter_fraction <= 1, got "
                             f"{self.exit_fraction} and {self.enter_fraction}")
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

    def observe(self, now: float, late: float, calls: int) -> bool:
        """Record one wake-up `late` seconds behind schedule with `calls` calls on the clock; True on a change."""
        self._rotate(now)
        bucket = self._buckets[int(self._current % self._nbuckets)]
        bucket[0] += 1
        self._total += 1
        if late >= self.rule.late_s:
            bucket[1] += 1
            self._late += 1
        if not self._overloaded:
            rule = self.rule
            if (calls >= rule.min_calls and self._total >= rule.min_samples
                    and self._late >= rule.enter_fraction * self._total):
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
        if self._late > self.rule.exit_fraction * self._total:
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
