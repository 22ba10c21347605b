"""Prometheus metrics for the bridge. No per-call labels: a label per UUID would grow without bound.

Counters that change on every frame (frames sent) are kept as plain integers by their owners and read at
scrape time by a collector, so the per-frame path never takes a metrics lock.
"""

from __future__ import annotations

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
        self.overloaded: Callable[[], bool] = lambda: False

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(f"{PREFIX}_active_calls", "Calls connected now", value=self.active_calls())
        yield CounterMetricFamily(f"{PREFIX}_calls", "Calls accepted (their UUID arrived)", value=self.calls_total())
        yield CounterMetricFamily(f"{PREFIX}_frames_sent", "Audio frames written to callers",
                                  value=self.frames_sent())
        yield GaugeMetricFamily(f"{PREFIX}_overloaded",
                                "1 while admission is paused because the media clock cannot keep its schedule",
                                value=int(self.overloaded()))


class ServerView(Protocol):
    """What the metrics read from the AudioSocket server (`bridge.server.AudioSocketServer`)."""

    calls: Sized
    calls_total: int
    clock: Any

    @property
    def overloaded(self) -> bool: ...

    def frames_sent_total(self) -> int: ...


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

    def watch(self, server: ServerView) -> None:
        """Read the server's live figures at scrape time and time the media clock's ticks.

        Frames and calls are plain integers the server keeps anyway, summed when Prometheus scrapes; the
        clock reports each wake-up's lateness (one observation per 2 ms phase, not one per frame).
        """
        self.live.active_calls = lambda: len(server.calls)
        self.live.calls_total = lambda: server.calls_total
        self.live.frames_sent = server.frames_sent_total
        self.live.overloaded = lambda: server.overloaded
        server.clock.on_lateness = self.clock_lateness.observe
