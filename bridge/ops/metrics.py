"""Prometheus metrics for the bridge. No per-call labels: a label per UUID would grow without bound.

Counters that change on every frame (frames sent) are kept as plain integers by their owners and read at
scrape time by a collector, so the per-frame path never takes a metrics lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sized
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "voicebridge"

disable_created_metrics()  # no `*_created` series: a scrape shows the figures, not a timestamp per family


class _LiveCollector(Collector):
    """Reads live figures (active calls, calls total, frames sent) from their owners when Prometheus scrapes."""

    def __init__(self) -> None:
        self.active_calls: Callable[[], int] = lambda: 0
        self.calls_total: Callable[[], int] = lambda: 0
        self.frames_sent: Callable[[], int] = lambda: 0
        self.dtmf_dropped: Callable[[], int] = lambda: 0
        self.pending: Callable[[], int] = lambda: 0
        self.tasks: Callable[[], int] = _live_tasks
        self.gc: Callable[[], GcFigures | None] = lambda: None
        self.overloaded: Callable[[], bool] = lambda: False

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(f"{PREFIX}_active_calls", "Calls connected now", value=self.active_calls())
        yield CounterMetricFamily(f"{PREFIX}_calls", "Calls accepted (their UUID arrived)", value=self.calls_total())
        yield CounterMetricFamily(f"{PREFIX}_frames_sent", "Audio frames written to callers",
                                  value=self.frames_sent())
        yield CounterMetricFamily(f"{PREFIX}_dtmf_dropped", "DTMF digits dropped by the per-call rate limit",
                                  value=self.dtmf_dropped())
        yield GaugeMetricFamily(f"{PREFIX}_pending_connections", "Connections waiting for their UUID now",
                                value=self.pending())
        yield GaugeMetricFamily(f"{PREFIX}_tasks", "Live asyncio tasks in this process (flat when idle: "
                                "a call that ended left nothing running)", value=self.tasks())
        figures = self.gc()
        if figures is not None:
            passes = CounterMetricFamily(f"{PREFIX}_gc_passes", "Garbage collector passes by generation",
                                         labels=["generation"])
            paused = CounterMetricFamily(f"{PREFIX}_gc_pause_seconds", "Time the garbage collector stopped "
                                         "the event loop, by generation", labels=["generation"])
            longest = GaugeMetricFamily(f"{PREFIX}_gc_pause_max_seconds", "Longest garbage collector pass "
                                        "since start, by generation", labels=["generation"])
            for generation in range(3):
                label = [str(generation)]
                passes.add_metric(label, figures.lifetime_passes[generation])
                paused.add_metric(label, figures.lifetime_s[generation])
                longest.add_metric(label, figures.lifetime_max_s[generation])
            yield from (passes, paused, longest)

        yield GaugeMetricFamily(f"{PREFIX}_overloaded",
                                "1 while admission is paused because the media clock cannot keep its schedule",
                                value=int(self.overloaded()))


def _live_tasks() -> int:
    """Live asyncio tasks of the running loop (0 outside one); read at scrape time, O(tasks)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return 0
    return len(asyncio.all_tasks(loop))


class GcFigures(Protocol):
    """Lifetime garbage-collector figures by generation (`bridge.server.GcPauses`), plain numbers: they are
    kept in a gc callback, where taking a metrics lock could deadlock against the code it interrupted."""

    lifetime_passes: list[int]
    lifetime_s: list[float]
    lifetime_max_s: list[float]


class ServerView(Protocol):
    """What the metrics read from the AudioSocket server (`bridge.server.AudioSocketServer`); read-only."""

    @property
    def calls(self) -> Sized: ...

    @property
    def pending(self) -> Sized: ...

    @property
    def calls_total(self) -> int: ...

    @property
    def clock(self) -> Any: ...

    @property
    def gc_pauses(self) -> GcFigures: ...

    @property
    def overloaded(self) -> bool: ...

    def frames_sent_total(self) -> int: ...

    def dtmf_dropped_total(self) -> int: ...


class Metrics:
    """All of the bridge's metric families, on a registry of their own (one per process, or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls_rejected = Counter(f"{PREFIX}_calls_rejected", "Connections refused or closed before a call",
                                      ["reason"], registry=r)
        self.cache_lookups = Counter(f"{PREFIX}_cache_lookups", "Cache lookups by kind and result",
                                     ["kind", "result"], registry=r)
        self.tts_requests = Counter(f"{PREFIX}_tts_requests", "Syntheses requested from the TTS service",
                                    ["api"], registry=r)
        self.tts_errors = Counter(f"{PREFIX}_tts_errors", "TTS failures by error class", ["error"], registry=r)
        self.tts_first_byte = Histogram(
            f"{PREFIX}_tts_first_byte_seconds", "Time from a TTS request to its first audio", ["api"],
            buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5), registry=r)
        self.fillers = Counter(f"{PREFIX}_fillers_played", "Filler fragments played while TTS was slow",
                               registry=r)
        self.barge_ins = Counter(f"{PREFIX}_barge_ins", "Prompts stopped by the caller", ["by"], registry=r)
        self.errors = Counter(f"{PREFIX}_errors", "Errors by where they happened", ["where"], registry=r)
        self.clock_lateness = Histogram(
            f"{PREFIX}_clock_lateness_seconds", "How late each media clock tick ran",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25), registry=r)
        # listening (bridge.listening): no per-call labels
        self.stt_first_partial = Histogram(
            f"{PREFIX}_stt_first_partial_seconds", "Time from the start of the caller's speech to its first partial "
            "transcript", buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5), registry=r)
        self.stt_final = Histogram(
            f"{PREFIX}_stt_final_seconds", "Time from the end of an utterance (endpointing) to its final transcript",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5), registry=r)
        self.turn_latency = Histogram(
            f"{PREFIX}_turn_latency_seconds", "Time from the end of the caller's utterance (endpointing) to the "
            "first audio queued after it", buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5), registry=r)
        self.stt_errors = Counter(f"{PREFIX}_stt_errors", "Speech recognizer failures and timeouts by error class",
                                  ["error"], registry=r)
        self.spoken_choices = Counter(f"{PREFIX}_spoken_choices", "Listening nodes left, by outcome",
                                      ["outcome"], registry=r)
        self.live = _LiveCollector()
        r.register(self.live)
        # the label values known in advance start at 0, so a dashboard's rate() has a series from the start
        for kind in ("static", "tts"):
            for result in ("hit", "miss"):
                self.cache_lookups.labels(kind=kind, result=result)
        self.tts_requests.labels(api="http")
        self.tts_first_byte.labels(api="http")
        for by in ("speech", "dtmf"):
            self.barge_ins.labels(by=by)
        for outcome in ("route", "next", "no_match", "no_input"):
            self.spoken_choices.labels(outcome=outcome)

    def watch(self, server: ServerView) -> None:
        """Read the server's live figures at scrape time and time the media clock's ticks.

        Frames and calls are plain integers the server keeps anyway, summed when Prometheus scrapes; the
        clock reports each wake-up's lateness (one observation per 2 ms phase, not one per frame).
        """
        self.live.active_calls = lambda: len(server.calls)
        self.live.calls_total = lambda: server.calls_total
        self.live.frames_sent = server.frames_sent_total
        self.live.dtmf_dropped = server.dtmf_dropped_total
        self.live.pending = lambda: len(server.pending)
        self.live.gc = lambda: server.gc_pauses
        self.live.overloaded = lambda: server.overloaded
        server.clock.on_lateness = self.clock_lateness.observe
