"""The garbage collector under a media clock: how long its passes stop the event loop, and when a full
pass is run on purpose (after finished calls, where the calls that remain lose least)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["FULL_GC_AFTER_CALLS", "FULL_GC_MIN_INTERVAL_S", "FullCollectionPolicy", "GcPauses"]


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
"""Finished calls after which `serve` runs a full collection (see `FullCollectionPolicy`)."""
FULL_GC_MIN_INTERVAL_S = 10.0
"""At most one scheduled full collection this often, however fast calls end."""


class FullCollectionPolicy:
    """When to run a full garbage collection: after `after_calls` finished calls, at most every `min_interval_s`.

    Why: a finished call leaves cyclic garbage (tasks, coroutines, frames and tracebacks of a dialogue
    cut short) that lived long enough to reach the oldest generation; with startup objects frozen and the
    third threshold raised (`_freeze_startup_objects`) a full pass is rare, so that garbage piled up (RSS
    56 -> 90 MB over 5,000 calls, issue 12). A full pass walks only what was allocated after the freeze,
    i.e. the live calls, so its pause is short and measured (`GcPauses`, generation 2); running it on
    finished calls keeps RSS flat. Sans I/O: `now` is given.
    """

    def __init__(self, after_calls: int = FULL_GC_AFTER_CALLS, min_interval_s: float = FULL_GC_MIN_INTERVAL_S) -> None:
        if after_calls < 1 or min_interval_s < 0:
            raise ValueError(f"FullCollectionPolicy needs after_calls >= 1 and min_interval_s >= 0, got "
                             f"{after_calls}, {min_interval_s}")
        self.after_calls = after_calls
        self.min_interval_s = min_interval_s
        self._ended = 0
        self._last: float | None = None

    def call_ended(self, now: float) -> bool:
        """A call finished at `now`: True when a full collection is due now (the count starts over)."""
        self._ended += 1
        if self._ended < self.after_calls:
            return False
        if self._last is not None and now - self._last < self.min_interval_s:
            return False
        self._ended = 0
        self._last = now
        return True
