"""The garbage collector under a media clock: how long its passes stop the event loop, and when a full
pass is run on purpose (after finished calls, while few calls are up to hear its pause)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["FULL_GC_AFTER_CALLS", "FULL_GC_FORCE_AFTER_CALLS", "FULL_GC_MIN_INTERVAL_S", "FULL_GC_QUIET_CALLS",
           "FullCollectionPolicy", "GcPauses"]


class GcPauses:
    """Times every pass of the garbage collector (`gc.callbacks`): each one stops the event loop, so its
    length is a gap every call may hear. Kept per window (the SIGUSR1 `clock stats` line: `gc`), and
    in lifetime figures `/metrics` reads at scrape time (`voicebridge_gc_pause_seconds{generation}` ...).
    The callback only adds numbers: it runs inside whatever allocation triggered the pass."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        self.lifetime_passes = [0, 0, 0]
        self.lifetime_s = [0.0, 0.0, 0.0]
        self.lifetime_max_s = [0.0, 0.0, 0.0]
        self.reset()

    def reset(self) -> None:
        self.passes = [0, 0, 0]
        self.max_s = [0.0, 0.0, 0.0]
        self.total_s = 0.0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        self.record(info["generation"], self._clock() - self._started)

    def record(self, generation: int, pause_s: float) -> None:
        self.passes[generation] += 1
        self.total_s += pause_s
        self.max_s[generation] = max(self.max_s[generation], pause_s)
        self.lifetime_passes[generation] += 1
        self.lifetime_s[generation] += pause_s
        self.lifetime_max_s[generation] = max(self.lifetime_max_s[generation], pause_s)

    def summary(self) -> dict[str, float]:
        """Flat figures (a multi-worker bench takes the worst worker's of each): passes and max ms by generation."""
        out: dict[str, float] = {"total_ms": round(self.total_s * 1000, 2)}
        for generation in range(3):
            out[f"gen{generation}_passes"] = self.passes[generation]
            out[f"gen{generation}_max_ms"] = round(self.max_s[generation] * 1000, 2)
        return out


FULL_GC_AFTER_CALLS = 200
"""Finished calls after which `serve` considers a full collection (see `FullCollectionPolicy`)."""
FULL_GC_MIN_INTERVAL_S = 10.0
"""At most one scheduled full collection this often, however fast calls end."""
FULL_GC_QUIET_CALLS = 50
"""Live calls at or below which a full collection may run: its pause grows with the live calls' objects
(about 5 ms with 50 calls up, 70-160 ms with 800), and every live call hears it."""
FULL_GC_FORCE_AFTER_CALLS = 20_000
"""Finished calls after which a full collection runs however many calls are up: a bridge that is never
quiet still frees what cycles other libraries leave (a finished call itself leaves none)."""


class FullCollectionPolicy:
    """When to run a full garbage collection: after `after_calls` finished calls, at most every
    `min_interval_s`, and only while at most `quiet_calls` calls are live, unless `force_after_calls` calls
    have finished since the last one.

    Why: a full pass walks every object the live calls hold with the event loop stopped, so each live call
    hears its pause as a gap: with 800 calls up, 70-160 ms, 5-8 frames lost by every call (docs/performance.md,
    "Full collections"). It is needed far less than it used to be: a finished call leaves no cyclic garbage
    (`voice.tasks.task_group`, `DialogueRunner.close`), so its objects are freed by reference counting when it
    ends. What is left comes from other libraries (a redis-py connection made on a call's behalf keeps a
    traceback cycle, and with it that call's task) and reached the oldest generation, which with start-up
    objects frozen and the third threshold raised (`_freeze_startup_objects`) is walked almost never; left
    alone it would pile up (RSS 56 -> 90 MB over 5,000 calls before those cycles were removed, issue 12).
    So it is collected when the bridge is quiet, when the pause is short and few calls hear it, and on a
    bridge that is never quiet, rarely. Sans I/O: `now` and the live calls are given.
    """

    def __init__(self, after_calls: int = FULL_GC_AFTER_CALLS, min_interval_s: float = FULL_GC_MIN_INTERVAL_S,
                 quiet_calls: int = FULL_GC_QUIET_CALLS, force_after_calls: int = FULL_GC_FORCE_AFTER_CALLS) -> None:
        if after_calls < 1 or min_interval_s < 0 or quiet_calls < 0 or force_after_calls < after_calls:
            raise ValueError(f"FullCollectionPolicy needs after_calls >= 1, min_interval_s >= 0, quiet_calls >= 0 "
                             f"and force_after_calls >= after_calls, got {after_calls}, {min_interval_s}, "
                             f"{quiet_calls}, {force_after_calls}")
        self.after_calls = after_calls
        self.min_interval_s = min_interval_s
        self.quiet_calls = quiet_calls
        self.force_after_calls = force_after_calls
        self._ended = 0
        self._last: float | None = None

    def call_ended(self, now: float, live_calls: int = 0) -> bool:
        """A call finished at `now`, `live_calls` still up: True when a full collection is due now (the count
        starts over)."""
        self._ended += 1
        if self._ended < self.after_calls:
            return False
        if self._last is not None and now - self._last < self.min_interval_s:
            return False
        if live_calls > self.quiet_calls and self._ended < self.force_after_calls:
            return False
        self._ended = 0
        self._last = now
        return True
