"""`voice-bridge bench`: N concurrent simulated calls against one bridge process, with a pacing report.

The bridge runs as a separate process (`python -m bridge serve --bridge-port 0`), so its CPU and memory can
be read from /proc and, with `--pin`, it can sit alone on a core while this process drives the callers
(`bridge.sim.caller.place_call`, all sharing one sending ticker) from another core.

Calls start spread over `--ramp` seconds. Once all are up, the bench sends the bridge SIGUSR1, which logs the
media clock's statistics and starts them afresh; a second SIGUSR1 shortly before the first call ends logs
the statistics of that steady-state window (every call live), which is what the report shows as clock
lateness, together with the bridge's CPU over the same window (the ramp-up's own lateness is reported
beside it). Per-call figures (realtime ratio, bursts, gaps, first audio) cover each whole call, as the
caller heard it.

Scenarios say what the bridge plays; `SCENARIOS` is the place to add more:
- `silence`, `tone`: line tests (`serve --silence`, `serve --tone 400`): the clock and the call queue alone.
- `all-static`, `all-miss`, `mixed`: the whole call path. A private Redis (`voice.emulators.redis_server`) and the
  ElevenLabs emulator (its own process, `--ttfb-ms` before each first byte) start first, the sample
  fragments are loaded with `voice-bridge load-audio`, and the bridge plays a dialogue file written for the
  scenario. Before each call the bench stores that call's variables at `call:<uuid>`, which is how the
  all-miss texts differ from call to call. The report adds the cache hit ratio (the bridge's
  `voicebridge_cache_lookups` counters when its metrics endpoint answers, else Redis INFO), and the
  emulator's requests and measured time to first byte.

`--baseline` runs `bridge.sim.baseline` (a task per call that writes a frame and then sleeps 20 ms, the common
design) through the same scenario with the same callers, and prints both side by side. `--workers N` runs
`serve --workers N` (N processes on one SO_REUSEPORT port); figures are then summed (CPU, memory) or the
worst worker's (clock lateness percentiles).

`--floor` runs the physical floor (bridge.sim.bench.floor: a C epoll server doing one send per call per
20 ms, compiled from `../shared/bench/floor.c` or `--floor-source`) with the same callers, the yardstick of
CPU per call-second; `bridge.sim.bench.overhead` prints issue 13's table of the three. A call the server
closes before any audio (or whose connection is refused) counts as refused, apart from the failed ones,
and the pacing figures are the admitted calls'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.resources
import json
import os
import random
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid as uuid_module
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.sim.caller import CallReport, place_call, sender_stats
from voice.config import add_option

__all__ = ["Scenario", "SCENARIOS", "SERVERS", "was_refused", "BenchResult", "BenchStack", "run_bench",
           "comparison_table",
           "configure_parser", "run"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What the bridge is started with and what each simulated caller does."""

    description: str
    serve_args: tuple[str, ...] = ()
    caller_kwargs: Callable[[int], dict[str, Any]] = lambda i: {}
    dialogue: str | None = None
    """The dialogue (TOML) the bridge plays; set for whole-path scenarios (Redis and the emulator run too)."""
    call_vars: Callable[[int, str], dict[str, str] | None] | None = None
    """Variables stored at `call:<uuid>` before call i (given a per-run nonce, so texts can be unique)."""
    baseline_args: tuple[str, ...] | None = None
    """`python -m bridge.sim.baseline` arguments that play the same thing; None: no baseline for this scenario."""
    first_text: Callable[[dict[str, str]], str] | None = None
    """The text a call synthesizes first, from its variables: lets the report split its first-audio time
    at the emulator's request log (reaching the emulator / the emulator's TTFB / after the first byte)."""

    @property
    def whole_path(self) -> bool:
        return self.dialogue is not None


SERVERS = ("bridge", "baseline", "floor", "pyfloor")
"""`floor`: the physical floor (bridge.sim.bench.floor), a C epoll server that only sends and discards;
`pyfloor`: its Python counterparts (bridge.sim.bench.pyfloor, variant chosen by `server_args`)."""

STATIC_PLAYLIST = ("hello", "your_cost_is", "rubles", "menu", "goodbye")
"""Five sample fragments, 7.7 s together."""

_ALL_STATIC = """\
# voice-bridge bench, all-static: five pre-recorded fragments, played again and again until the caller hangs up
start = "prompt"
[nodes.prompt]
play = [ {items} ]
next = "prompt"
""".replace("{items}", ", ".join(f'{{ static = "{name}" }}' for name in STATIC_PLAYLIST))

_ALL_MISS = """\
# voice-bridge bench, all-miss: one text per call that nobody has heard before, then silence
start = "answer"
[nodes.answer]
play = [ { tts = "{phrase}" } ]
next = "listen"
[nodes.listen]
timeout_s = 3600
next = "listen"
"""

_MIXED = """\
# voice-bridge bench, mixed: the sample greeting (four fragments and a synthesized amount), then silence
start = "greeting"
[vars]
amount = "12500"
[nodes.greeting]
play = [
    { static = "hello" },
    { static = "your_cost_is" },
    { tts = "{amount}" },
    { static = "rubles" },
    { static = "menu" },
]
next = "listen"
[nodes.listen]
timeout_s = 3600
next = "listen"
"""

MIXED_COMMON_AMOUNTS = 20
MIXED_UNIQUE_SHARE = 0.2
"""In `mixed`, a fifth of the calls carry an amount of their own; the rest one of 20 common amounts."""


def _miss_vars(i: int, nonce: str) -> dict[str, str]:
    return {"phrase": f"заказ {nonce}-{i:05d}"}


def _mixed_vars(i: int, nonce: str) -> dict[str, str]:
    rng = random.Random(i)
    if rng.random() < MIXED_UNIQUE_SHARE:
        return {"amount": f"{nonce[:4]} {i:05d}"}
    return {"amount": str(1000 + 500 * rng.randrange(MIXED_COMMON_AMOUNTS))}


SCENARIOS: dict[str, Scenario] = {
    "silence": Scenario("the bridge plays silence (its idle state): the clock alone", serve_args=("--silence",),
                        baseline_args=("--mode", "silence")),
    "tone": Scenario("the bridge plays a 400 Hz tone through every call's queue (play_frames: the path speech takes)",
                     serve_args=("--tone", "400"), baseline_args=("--mode", "tone", "--tone", "400")),
    "all-static": Scenario("a dialogue of five cached fragments (7.7 s), repeated: Redis reads and playback",
                           dialogue=_ALL_STATIC,
                           baseline_args=("--mode", "static", "--play", ",".join(STATIC_PLAYLIST))),
    "all-miss": Scenario("one synthesized text per call, different for every call: each call misses the cache "
                         "and waits for the emulator", dialogue=_ALL_MISS, call_vars=_miss_vars,
                         first_text=lambda variables: variables["phrase"]),
    "mixed": Scenario(f"the sample greeting: four fragments and an amount, {MIXED_UNIQUE_SHARE:.0%} of calls with "
                      f"an amount of their own, the rest one of {MIXED_COMMON_AMOUNTS} common ones",
                      dialogue=_MIXED, call_vars=_mixed_vars),
}


@dataclasses.dataclass
class BenchResult:
    scenario: str
    calls: int
    duration_s: float
    completed: int
    failed: int
    realtime_ratio_min: float | None
    realtime_ratio_max: float | None
    worst_burst_frames: int
    worst_gap_ms: float | None
    first_frame_ms_p50: float | None
    first_frame_ms_p99: float | None
    first_audio_ms_p50: float | None
    first_audio_ms_p99: float | None
    clock_lateness_ms_p50: float | None
    clock_lateness_ms_p99: float | None
    clock_lateness_ms_max: float | None
    clock_tick_work_ms_p99: float | None
    clock_resyncs: int | None
    server_cpu_percent: float | None
    server_cpu_user_percent: float | None
    """The part of it spent in the bridge's own code (the rest is the kernel's TCP work: syscalls)."""
    server_cpu_ms_per_call_s: float | None
    server_rss_idle_mb: float | None
    server_rss_kb_per_call: float | None
    callers_cpu_percent: float
    callers_ticker_late_max_ms: float
    hangups: dict[str, int]
    errors: list[str]
    pinned: bool
    clock_window: dict[str, Any] | None = None
    """The bridge's own clock statistics over the steady-state window, as it logged them."""
    server: str = "bridge"
    """`bridge`, or `baseline` (bridge.sim.baseline: sleep(0.02) after each write)."""
    workers: int = 1
    first_audio_ms_max: float | None = None
    ramp_lateness_ms_p99: float | None = None
    ramp_lateness_ms_max: float | None = None
    """Clock lateness while the calls were starting (the all-miss syntheses happen then)."""
    cache_hit_ratio: float | None = None
    cache: dict[str, Any] | None = None
    """Lookups by kind and result (`source`: the bridge's metrics, or Redis INFO when they cannot be read)."""
    emulator: dict[str, Any] | None = None
    """The emulator's TTFB knob and measured TTFB, its HTTP requests and WebSocket connections."""
    first_audio_split_ms: dict[str, Any] | None = None
    """Where first audio's time goes (p50 / p99 of each part): UUID -> the emulator has the request,
    the emulator's own TTFB, its first byte -> the caller hears audio (conversion, queue, clock phase)."""
    loadavg: tuple[float, float] | None = None
    """The machine's 1-minute load average before and after the run (other work on the same cores)."""
    callers_loop_lag_max_ms: float | None = None
    """The callers' own event loop at its most delayed (a 5 ms timer's overshoot): above ~10 ms, frames a
    caller read late look bunched, so the per-call burst and gap figures include the callers' delays."""
    refused: int = 0
    """Calls the server refused: the connection was refused, or closed before any audio message arrived.
    The pacing and first-audio figures are the admitted calls' only."""
    realtime_ratio_p1: float | None = None
    realtime_ratio_p50: float | None = None
    realtime_ratio_p99: float | None = None
    """The spread of the admitted calls' realtime ratios (1st, 50th and 99th percentile over calls)."""
    clock_after_window: dict[str, Any] | None = None
    """The bridge's clock and garbage-collector figures from the end of the window to its stop (the calls'
    hang-ups included), from its `stopped` line."""

    def rows(self) -> list[tuple[str, str]]:
        def f(value: Any, fmt: str = "{}") -> str:
            return "-" if value is None else fmt.format(value)

        baseline = self.server == "baseline"
        floor = self.server == "floor"
        rows = [
            ("server", self.server + (f" x {self.workers} workers" if self.workers > 1 else "")),
            ("scenario", self.scenario),
            ("calls (completed / failed)", f"{self.calls} ({self.completed} / {self.failed})"),
            ("refused (closed before audio)", str(self.refused)),
            ("duration per call", f"{self.duration_s:g} s"),
            ("realtime ratio, worst low / high", f"{f(self.realtime_ratio_min, '{:.4f}')} / "
                                                 f"{f(self.realtime_ratio_max, '{:.4f}')}"),
            ("realtime ratio over calls p1 / p50 / p99", f"{f(self.realtime_ratio_p1, '{:.4f}')} / "
                                                         f"{f(self.realtime_ratio_p50, '{:.4f}')} / "
                                                         f"{f(self.realtime_ratio_p99, '{:.4f}')}"),
            ("worst burst (frames in 20 ms)", str(self.worst_burst_frames)),
            ("worst gap", f(self.worst_gap_ms, "{:.1f} ms")),
            (
                "first frame p50 / p99",
                f"{f(self.first_frame_ms_p50, '{:.1f}')} / {f(self.first_frame_ms_p99, '{:.1f}')} ms",
            ),
            (
                "first audio p50 / p99 / max",
                f"{f(self.first_audio_ms_p50, '{:.1f}')} / "
                f"{f(self.first_audio_ms_p99, '{:.1f}')} / "
                f"{f(self.first_audio_ms_max, '{:.1f}')} ms",
            ),
        ]
        if baseline:
            overshoot = (self.clock_window or {}).get("sleep_overshoot", {})
            rows.append(("sleep(0.02) overshoot p50 / p99 / max",
                         f"{f(overshoot.get('p50_ms'))} / {f(overshoot.get('p99_ms'))} / "
                         f"{f(overshoot.get('max_ms'))} ms"))
        elif not floor:
            rows += [
                (
                    "clock lateness p50 / p99 / max",
                    f"{f(self.clock_lateness_ms_p50)} / {f(self.clock_lateness_ms_p99)} / "
                    f"{f(self.clock_lateness_ms_max)} ms",
                ),
                (
                    "clock lateness in ramp-up p99 / max",
                    f"{f(self.ramp_lateness_ms_p99)} / {f(self.ramp_lateness_ms_max)} ms",
                ),
                ("clock tick work p99", f(self.clock_tick_work_ms_p99, "{} ms")),
                ("clock resyncs", f(self.clock_resyncs)),
            ]
        rows += [
            ("bridge CPU", f"{f(self.server_cpu_percent, '{:.1f}')} % of a core "
                           f"({f(self.server_cpu_user_percent, '{:.1f}')} % user; "
                           f"{f(self.server_cpu_ms_per_call_s, '{:.3f}')} ms per call-second)"),
            ("bridge RSS idle / per call", f"{f(self.server_rss_idle_mb, '{:.1f}')} MB / "
                                           f"{f(self.server_rss_kb_per_call, '{:.1f}')} KB"),
        ]
        if self.cache is not None:
            rows.append(("cache hit ratio", f"{f(self.cache_hit_ratio, '{:.1%}')} ({_describe_cache(self.cache)})"))
        if self.emulator is not None:
            e = self.emulator
            rows.append(
                (
                    "emulator TTFB knob / measured p50 / p99",
                    f"{f(e.get('ttfb_knob_ms'), '{:g}')} / {f(e.get('ttfb_ms_p50'))} / {f(e.get('ttfb_ms_p99'))} ms",
                )
            )
            split = self.first_audio_split_ms
            if split:
                rows.append(
                    (
                        "first audio = to emulator + TTFB + after (p50)",
                        " + ".join(
                            f(split[k].get("p50_ms")) for k in ("to_emulator", "emulator_ttfb", "after_first_byte")
                        )
                        + " ms",
                    )
                )
                rows.append(
                    (
                        "first audio = to emulator + TTFB + after (p99)",
                        " + ".join(
                            f(split[k].get("p99_ms")) for k in ("to_emulator", "emulator_ttfb", "after_first_byte")
                        )
                        + " ms",
                    )
                )
            rows.append(
                (
                    "emulator requests",
                    f"{e.get('http_requests', 0)} HTTP, {e.get('ws_connections', 0)} WebSocket, "
                    f"{e.get('max_concurrent_seen', 0)} at once at most",
                )
            )
        rows += [
            ("callers CPU (this process)", f"{self.callers_cpu_percent:.1f} % of a core"),
            ("callers ticker worst lateness", f"{self.callers_ticker_late_max_ms:.1f} ms"),
            ("callers event loop worst lag", f(self.callers_loop_lag_max_ms, "{:.1f} ms")),
            ("hang-ups", ", ".join(f"{k}={v}" for k, v in sorted(self.hangups.items()))),
            ("pinned", "bridge on one core, callers on another" if self.pinned else "no"),
            (
                "load average before / after",
                "-" if self.loadavg is None else f"{self.loadavg[0]:.2f} / {self.loadavg[1]:.2f}",
            ),
        ]
        return rows

    def table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.errors:
            lines.append(f"errors ({len(self.errors)}): " + "; ".join(self.errors[:5]))
        return "\n".join(lines)


def comparison_table(results: list[BenchResult]) -> str:
    """Several results side by side (e.g. the bridge and the baseline), one column each."""
    columns: list[dict[str, str]] = [dict(r.rows()) for r in results]
    labels: list[str] = []
    for result in results:
        for label, _ in result.rows():
            if label not in labels:
                labels.append(label)
    width = max(len(label) for label in labels)
    col_widths = [max(len(c.get(label, "-")) for label in labels) for c in columns]
    lines = []
    for label in labels:
        cells = [c.get(label, "-").ljust(w) for c, w in zip(columns, col_widths, strict=True)]
        lines.append(f"{label:<{width}}  " + "  |  ".join(cells))
    for result in results:
        if result.errors:
            lines.append(f"{result.server} errors ({len(result.errors)}): " + "; ".join(result.errors[:5]))
    return "\n".join(lines)


def _describe_cache(cache: dict[str, Any]) -> str:
    if cache.get("source") == "bridge metrics":
        parts = [f"{kind} {cache.get(kind + '_hits', 0)} hit / {cache.get(kind + '_misses', 0)} miss"
                 for kind in ("static", "tts") if cache.get(kind + "_hits", 0) or cache.get(kind + "_misses", 0)]
        return "bridge lookups: " + ", ".join(parts or ["none"])
    return (f"Redis INFO: {cache.get('redis_hits', 0)} hits / {cache.get('redis_misses', 0)} misses, "
            "call variables included")


# --- the bridge process ---------------------------------------------------------------------------------


class BridgeProcess:
    """`python -m bridge serve` (or the baseline) on a free port, its JSON log lines read as they come.

    With `workers` > 1 the process is a supervisor: every worker logs its own `listening` (with its pid)
    and its own `clock_stats`; CPU and memory are summed over the supervisor and its workers.
    """

    def __init__(self, serve_args: tuple[str, ...], max_calls: int, *, command: list[str] | None = None,
                 env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.serve_args = serve_args
        self.max_calls = max_calls
        self.command = command
        self.env = env
        self.workers = workers
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.worker_pids: list[int] = []
        self.stats: list[dict[str, Any]] = []
        self.stopped: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self._listening = asyncio.Event()
        self._stats_seen = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 20.0) -> None:
        cmd = self.command or [
            sys.executable, "-m", "bridge", "serve", "--bridge-host", "127.0.0.1", "--bridge-port", "0",
            "--bridge-max-calls", str(self.max_calls), "--bridge-shutdown-grace", "1",
            "--log-format", "json", "--log-level", "info", *self.serve_args]
        env = None if self.env is None else {**os.environ, **self.env}
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, limit=2**20)
        self._reader = asyncio.create_task(self._read_log())
        try:
            await asyncio.wait_for(self._listening.wait(), timeout_s)
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"the bridge did not start listening within {timeout_s} s: "
                               + "; ".join(self.warnings[-3:])) from None

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        listening = 0
        async for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                self.warnings.append(raw.decode(errors="replace").strip())
                continue
            event = line.get("event")
            if event == "listening":
                self.port = int(line["port"])
                if "pid" in line:
                    self.worker_pids.append(int(line["pid"]))
                listening += 1
                if listening >= self.workers:
                    self._listening.set()
            elif event == "clock_stats":
                async with self._stats_seen:
                    self.stats.append(line["clock"])
                    self._stats_seen.notify_all()
            elif event == "stopped":
                self.stopped = line
            elif line.get("level") in ("warning", "error") and event not in ("call_ended",):
                self.warnings.append(f"{event}: {line.get('error', '')}".strip(": "))

    async def snapshot_stats(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """Ask for the clock statistics since the previous snapshot (SIGUSR1) and wait for them.

        With several workers, each answers for itself: the worst worker's figures are returned.
        """
        assert self.proc is not None
        async with self._stats_seen:
            before = len(self.stats)
            self.proc.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(
                    self._stats_seen.wait_for(lambda: len(self.stats) >= before + self.workers), timeout_s)
            except TimeoutError:
                if len(self.stats) == before:
                    return None
            return _worst_of(self.stats[before:])

    @property
    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *self.worker_pids]

    def cpu_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the bridge process (and its workers) so far."""
        user = system = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user += int(fields[11]) / ticks
            system += int(fields[12]) / ticks
        return user, system

    def rss_kb(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                continue
        return total

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            await self.kill()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def _worst_of(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' `clock_stats`: percentiles cannot be merged, so each figure is the worst worker's."""
    if len(stats) == 1:
        return stats[0]
    merged: dict[str, Any] = {"workers": stats}
    for key, value in stats[0].items():
        if isinstance(value, dict):
            merged[key] = {k: max(s.get(key, {}).get(k, 0) for s in stats) for k in value}
        elif isinstance(value, (int, float)):
            merged[key] = sum(s.get(key, 0) for s in stats)
    return merged


# --- Redis, the emulator and the fragments (whole-path scenarios) ----------------------------------------


def _free_port(count: int = 1) -> int:
    """A port p such that p .. p+count-1 were free a moment ago (the bridge's workers' metrics ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no block of {count} free ports")


def fragments_dir() -> Path:
    return Path(str(importlib.resources.files("bridge").joinpath("data", "fragments")))


class BenchStack:
    """A private Redis, the ElevenLabs emulator (its own process) and the sample fragments.

    Started once and shared by every run of a series; `prepare()` gives each run a clean slate (the
    database flushed, the fragments reloaded, the emulator's counters reset and its TTFB knob set).
    """

    def __init__(self, ttfb_ms: float = 100.0) -> None:
        self.ttfb_ms = ttfb_ms
        self.redis_server: Any = None
        self.emulator: Any = None
        self.redis: Any = None
        self.http: Any = None
        self.dir = tempfile.mkdtemp(prefix="voice-bridge-bench-")

    async def __aenter__(self) -> BenchStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        import httpx
        import redis.asyncio as aioredis

        from voice.emulators.elevenlabs import DEFAULT_API_KEY, EmulatorProcess
        from voice.emulators.redis_server import RedisServer

        self.api_key = DEFAULT_API_KEY
        self.redis_server = await asyncio.to_thread(RedisServer().start)
        self.emulator = EmulatorProcess("--api-key", DEFAULT_API_KEY, "--ttfb-ms", str(self.ttfb_ms),
                                        "--log-level", "warning")
        await asyncio.to_thread(self.emulator.start)
        self.redis = aioredis.Redis.from_url(self.redis_server.url, max_connections=64)
        self.http = httpx.AsyncClient(base_url=self.emulator.url, timeout=10)

    @property
    def pids(self) -> list[int]:
        """Redis and the emulator: pinned with the callers, away from the bridge's core."""
        return [p.pid for p in (self.redis_server.process, self.emulator.process) if p is not None]

    async def prepare(self, name: str, scenario: Scenario) -> dict[str, str]:
        """A clean slate for one run; returns the environment the bridge needs."""
        await self.redis.flushdb()
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "load-audio", "--redis-url", self.redis_server.url, str(fragments_dir()),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await load.communicate()
        if load.returncode != 0:
            raise RuntimeError(f"voice-bridge load-audio failed: {out.decode(errors='replace')[-500:]}")
        (await self.http.post("/_emulator/reset")).raise_for_status()
        (await self.http.post("/_emulator/knobs", json={"ttfb_ms": self.ttfb_ms})).raise_for_status()
        path = Path(self.dir) / f"{name}.toml"
        path.write_text(scenario.dialogue or "", encoding="utf-8")
        return {
            "REDIS_URL": self.redis_server.url,
            "ELEVENLABS_BASE_URL": self.emulator.url,
            "ELEVENLABS_API_KEY": self.api_key,
            "DIALOGUE_FILE": str(path),
        }

    async def set_call_vars(self, call_uuid: uuid_module.UUID, variables: dict[str, str]) -> None:
        from voice.keys import call_vars_key

        await self.redis.set(call_vars_key(call_uuid), json.dumps(variables, ensure_ascii=False), ex=3600)

    async def redis_lookups(self) -> tuple[int, int]:
        info = await self.redis.info("stats")
        return int(info["keyspace_hits"]), int(info["keyspace_misses"])

    async def emulator_stats(self) -> dict[str, Any]:
        stats = (await self.http.get("/_emulator/stats")).json()
        ttfb = [1000 * (r["first_byte_at"] - r["received_at"]) for r in stats.get("requests", [])
                if "first_byte_at" in r and "received_at" in r]
        return {
            "ttfb_knob_ms": self.ttfb_ms,
            "ttfb_ms_p50": _percentile(ttfb, 50),
            "ttfb_ms_p99": _percentile(ttfb, 99),
            "http_requests": stats.get("http_requests", 0),
            "http_status": stats.get("http_status", {}),
            "ws_connections": stats.get("ws_connections", 0),
            "max_concurrent_seen": stats.get("max_concurrent_seen", 0),
            "characters": stats.get("characters", 0),
        }

    async def emulator_requests(self) -> list[dict[str, Any]]:
        """The emulator's recent HTTP requests (its last 1000): text, received_at, first_byte_at."""
        return list((await self.http.get("/_emulator/stats")).json().get("requests", []))

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.emulator is not None:
            await asyncio.to_thread(self.emulator.stop)
        if self.redis_server is not None:
            await asyncio.to_thread(self.redis_server.close)
        shutil.rmtree(self.dir, ignore_errors=True)


async def _scrape_lookups(ports: list[int]) -> dict[str, int] | None:
    """`voicebridge_cache_lookups` from the bridge's metrics endpoint(s), summed; None when none answers."""
    import httpx

    totals: dict[str, int] = {}
    answered = False
    async with httpx.AsyncClient(timeout=2) as client:
        for port in ports:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            answered = True
            for line in response.text.splitlines():
                if line.startswith("voicebridge_cache_lookups_total{"):
                    labels, _, value = line[len("voicebridge_cache_lookups_total{"):].partition("} ")
                    parsed = dict(part.split("=", 1) for part in labels.split(","))
                    kind, result = parsed.get("kind", '""').strip('"'), parsed.get("result", '""').strip('"')
                    name = f"{kind}_{'hits' if result == 'hit' else 'misses'}"
                    totals[name] = totals.get(name, 0) + int(float(value))
    return totals if answered else None


# --- the run ---------------------------------------------------------------------------------------------


def _percentile(values: list[float], p: float, digits: int = 2) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return round(ordered[index], digits)


_CPUS: frozenset[int] = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
"""The CPUs this process may use, as it started (a pinned run narrows this process's own set)."""


def _unpin_self() -> None:
    """Before starting a server: every CPU again, so the server (and workers it forks) does not inherit
    the callers' core from a previous pinned run of this process."""
    if _CPUS:
        os.sched_setaffinity(0, _CPUS)


def _pin(server_pids: list[int], other_pids: list[int]) -> bool:
    """The bridge alone on the first CPU; this process, Redis and the emulator on the others."""
    if not _CPUS:
        return False
    cpus = sorted(_CPUS)
    if len(cpus) < 2:
        return False
    for pid in server_pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpus[0]})
    for pid in [0, *other_pids]:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, set(cpus[1:]))
    return True


async def run_bench(calls: int, duration_s: float, *, scenario: str = "silence", ramp_s: float = 1.0,
                    pin: bool = False, server: str = "bridge", workers: int = 1, ttfb_ms: float = 100.0,
                    stack: BenchStack | None = None, floor_binary: Path | None = None,
                    server_args: tuple[str, ...] = (), server_cpu: float = 1.0,
                    keep_reports: list[CallReport] | None = None) -> BenchResult:
    """One run: start the server (`bridge`, `baseline` or `floor`), place `calls` calls, report.

    Whole-path scenarios use `stack` (Redis, emulator, fragments) when given, else start their own. The
    floor (bridge.sim.bench.floor) plays its fixed tone whatever the scenario; `floor_binary` is the built
    floor, else it is built from the default source. `server_cpu` below 1 holds the server to that share
    of one core (`bridge.sim.bench.cgroup`: root only). `keep_reports`: every call's report is appended to
    it, with the audio heard and each frame's arrival time (`bridge.sim.bench.gaps`).
    """
    chosen = SCENARIOS[scenario]
    if duration_s < ramp_s + 2:
        raise ValueError(f"--duration must exceed --ramp by at least 2 s (got {duration_s} and {ramp_s})")
    if server not in SERVERS:
        raise ValueError(f"server must be one of {', '.join(SERVERS)}, got {server!r}")
    if server == "baseline" and chosen.baseline_args is None:
        raise ValueError(f"scenario {scenario!r} has no baseline (the baseline does not synthesize speech)")
    if server == "floor" and floor_binary is None:
        from bridge.sim.bench.floor import FloorError, build_floor, default_floor_source

        source = default_floor_source()
        if source is None:
            raise FloorError("no floor source: pass --floor-source PATH (floor.c)")
        floor_binary = build_floor(source)
    if workers < 1 or (workers > 1 and server != "bridge"):
        raise ValueError("--workers is for the bridge, and at least 1")
    async with contextlib.AsyncExitStack() as exits:
        if chosen.whole_path and stack is None:
            stack = await exits.enter_async_context(BenchStack(ttfb_ms))
        if server in ("floor", "pyfloor"):
            stack = None  # the floors read nothing: they play their tone
        return await _run(chosen, scenario, calls, duration_s, ramp_s, pin, server, workers, stack, floor_binary,
                          server_args, server_cpu, keep_reports)
    raise AssertionError("unreachable")  # pragma: no cover


async def _run(chosen: Scenario, scenario: str, calls: int, duration_s: float, ramp_s: float, pin: bool,
               server: str, workers: int, stack: BenchStack | None, floor_binary: Path | None = None,
               server_args: tuple[str, ...] = (), server_cpu: float = 1.0,
               keep_reports: list[CallReport] | None = None) -> BenchResult:
    env: dict[str, str] | None = None
    metrics_ports: list[int] = []
    serve_args = chosen.serve_args
    if stack is not None:
        env = await stack.prepare(scenario, chosen)
        if server == "bridge":
            base = _free_port(workers)
            metrics_ports = list(range(base, base + workers))
            serve_args = (*serve_args, "--metrics-port", str(base))
    if workers > 1:
        serve_args = (*serve_args, "--workers", str(workers))
    command = None
    if server == "pyfloor":
        command = [sys.executable, "-m", "bridge.sim.bench.pyfloor", "--port", "0", *server_args]
    if server == "baseline":
        assert chosen.baseline_args is not None
        command = [sys.executable, "-m", "bridge.sim.baseline", "--port", "0", *chosen.baseline_args]
        if stack is not None:
            command += ["--redis-url", stack.redis_server.url]
    bridge: BridgeProcess
    if server == "floor":
        from bridge.sim.bench.floor import FloorProcess

        assert floor_binary is not None
        bridge = FloorProcess(floor_binary)
    else:
        bridge = BridgeProcess(serve_args, max_calls=max(2000, calls + 100), command=command, env=env,
                               workers=workers)
    load_before = os.getloadavg()[0]
    _unpin_self()
    if stack is not None:
        for pid in stack.pids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, _CPUS)
    await bridge.start()
    assert bridge.proc is not None and bridge.port is not None
    pinned = pin and _pin(bridge.pids, stack.pids if stack is not None else [])
    nonce = uuid_module.uuid4().hex[:8]
    quota = contextlib.ExitStack()
    if server_cpu < 1:
        from bridge.sim.bench.cgroup import limit_cpu

        quota.enter_context(limit_cpu(bridge.pids, server_cpu))
    try:
        await asyncio.sleep(0.5)
        rss_idle = bridge.rss_kb()
        lookups0 = await stack.redis_lookups() if stack is not None else None
        await bridge.snapshot_stats()  # start the ramp-up window
        loop = asyncio.get_running_loop()
        started = loop.time()

        placed: dict[str, tuple[float, str]] = {}
        """call UUID -> (monotonic time just before the call was placed, its first synthesized text)"""

        async def one(i: int) -> CallReport | BaseException:
            await asyncio.sleep(i * ramp_s / calls)
            call_uuid = uuid_module.uuid4()
            try:
                if stack is not None and chosen.call_vars is not None:
                    variables = chosen.call_vars(i, nonce)
                    if variables:
                        await stack.set_call_vars(call_uuid, variables)
                        if chosen.first_text is not None:
                            placed[str(call_uuid)] = (time.monotonic(), chosen.first_text(variables))
                assert bridge.port is not None  # set once the bridge logged that it listens
                return await place_call("127.0.0.1", bridge.port, duration_s=duration_s, uuid=call_uuid,
                                        keep_audio=keep_reports is not None,
                                        max_wait_s=duration_s + 30, **chosen.caller_kwargs(i))
            except Exception as exc:
                return exc

        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        lag: list[float] = [0.0]
        watcher = asyncio.create_task(_watch_lag(lag))
        tasks = [asyncio.create_task(one(i)) for i in range(calls)]
        window_start = ramp_s + 0.5
        window_end = duration_s - 0.5
        await asyncio.sleep(max(0.0, started + window_start - loop.time()))
        ramp = await bridge.snapshot_stats()  # the ramp-up, reported apart
        cpu_a, t_a = bridge.cpu_s(), time.monotonic()
        await asyncio.sleep(max(0.0, started + (window_start + window_end) / 2 - loop.time()))
        rss_load = bridge.rss_kb()
        await asyncio.sleep(max(0.0, started + window_end - loop.time()))
        window = await bridge.snapshot_stats()
        cpu_b, t_b = bridge.cpu_s(), time.monotonic()
        results = await asyncio.gather(*tasks)
        watcher.cancel()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        wall1 = time.monotonic()
        cache = emulator = split = None
        hit_ratio = None
        if stack is not None:
            cache, hit_ratio = await _cache_figures(stack, lookups0, metrics_ports)
            emulator = await stack.emulator_stats()
            if placed:
                split = _first_audio_split(results, placed, await stack.emulator_requests())
    finally:
        await bridge.stop()
        quota.close()
    refused = sum(1 for r in results if was_refused(r))
    reports = [r for r in results if isinstance(r, CallReport) and not was_refused(r)]
    if keep_reports is not None:
        keep_reports.extend(reports)
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, CallReport) and not was_refused(r)]
    errors += [f"{r.uuid}: {r.error}" for r in reports if r.error]
    hangups: dict[str, int] = {"refused": refused} if refused else {}
    for r in reports:
        hangups[r.hangup] = hangups.get(r.hangup, 0) + 1
    ratios = [r.realtime_ratio for r in reports if r.realtime_ratio is not None]
    gaps = [r.worst_gap_ms for r in reports if r.worst_gap_ms is not None]
    first_frames = [r.first_frame_ms for r in reports if r.first_frame_ms is not None]
    first_audio = [r.first_audio_ms for r in reports if r.first_audio_ms is not None]
    lateness = (window or {}).get("lateness", {})
    ramp_lateness = (ramp or {}).get("lateness", {})
    work = (window or {}).get("tick_work", {})
    window_s = t_b - t_a
    cpu_user = cpu_b[0] - cpu_a[0]
    cpu_window = cpu_user + cpu_b[1] - cpu_a[1]
    callers_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    # The call-seconds actually live inside the CPU window, from each call's own span (UUID sent, then its
    # duration), not calls x window: a server slow to bring its calls up would otherwise look cheaper.
    live_s = sum(max(0.0, min(t_b, r.uuid_at + r.duration_s) - max(t_a, r.uuid_at))
                 for r in reports if r.uuid_at)
    completed = sum(1 for r in reports if r.hangup == "caller" and not r.error)
    admitted = calls - refused
    return BenchResult(
        scenario=scenario,
        calls=calls,
        duration_s=duration_s,
        completed=completed,
        failed=calls - completed,
        realtime_ratio_min=min(ratios) if ratios else None,
        realtime_ratio_max=max(ratios) if ratios else None,
        worst_burst_frames=max((r.worst_burst_frames for r in reports), default=0),
        worst_gap_ms=max(gaps) if gaps else None,
        first_frame_ms_p50=_percentile(first_frames, 50),
        first_frame_ms_p99=_percentile(first_frames, 99),
        first_audio_ms_p50=_percentile(first_audio, 50),
        first_audio_ms_p99=_percentile(first_audio, 99),
        clock_lateness_ms_p50=lateness.get("p50_ms"),
        clock_lateness_ms_p99=lateness.get("p99_ms"),
        clock_lateness_ms_max=lateness.get("max_ms"),
        clock_tick_work_ms_p99=work.get("p99_ms"),
        clock_resyncs=(window or {}).get("resyncs"),
        server_cpu_percent=round(100 * cpu_window / window_s, 1) if window_s > 0 else None,
        server_cpu_user_percent=round(100 * cpu_user / window_s, 1) if window_s > 0 else None,
        server_cpu_ms_per_call_s=(round(1000 * cpu_window / live_s, 4) if live_s > 0 else None),
        server_rss_idle_mb=round(rss_idle / 1024, 1),
        server_rss_kb_per_call=round((rss_load - rss_idle) / max(1, admitted), 1),
        callers_cpu_percent=round(100 * callers_cpu / (wall1 - wall0), 1),
        callers_ticker_late_max_ms=sender_stats()["lateness_max_ms"],
        hangups=hangups,
        errors=errors[:20] + bridge.warnings[:20],
        pinned=pinned,
        clock_window=window,
        server=server + (f" {' '.join(server_args)}" if server_args else ""),
        workers=workers,
        first_audio_ms_max=round(max(first_audio), 2) if first_audio else None,
        ramp_lateness_ms_p99=ramp_lateness.get("p99_ms"),
        ramp_lateness_ms_max=ramp_lateness.get("max_ms"),
        cache_hit_ratio=hit_ratio,
        cache=cache,
        emulator=emulator,
        first_audio_split_ms=split,
        loadavg=(round(load_before, 2), round(os.getloadavg()[0], 2)),
        callers_loop_lag_max_ms=round(lag[0] * 1000, 1),
        refused=refused,
        realtime_ratio_p1=_percentile(ratios, 1, 4),
        realtime_ratio_p50=_percentile(ratios, 50, 4),
        realtime_ratio_p99=_percentile(ratios, 99, 4),
        clock_after_window=(bridge.stopped or {}).get("clock"),
    )


_REFUSED_HANGUPS = frozenset({"server", "server-eof", "server-reset"})


def was_refused(result: CallReport | BaseException) -> bool:
    """A call the server did not take: the connection was refused or reset before it was made, or it was
    closed before any audio message arrived (how an overloaded bridge refuses: closed before the call)."""
    if isinstance(result, BaseException):
        return isinstance(result, (ConnectionRefusedError, ConnectionResetError))
    return result.frames == 0 and result.hangup in _REFUSED_HANGUPS


async def _watch_lag(worst: list[float], period_s: float = 0.005) -> None:
    """How late this process's event loop runs a short timer, at worst (kept in `worst[0]`, seconds)."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(period_s)
        late = loop.time() - start - period_s
        if late > worst[0]:
            worst[0] = late


def _first_audio_split(results: list[CallReport | BaseException], placed: dict[str, tuple[float, str]],
                       requests: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Split each call's first-audio time at its TTS request (one request per text, matched by text).

    Both processes read CLOCK_MONOTONIC, so their times compare; the call's start is taken just before
    `place_call` (the loopback connect adds well under a millisecond to the first part).
    """
    by_text: dict[str, dict[str, Any]] = {}
    for request in requests:
        text = (request.get("body") or {}).get("text")
        if isinstance(text, str) and "first_byte_at" in request:
            by_text[text] = request
    parts: dict[str, list[float]] = {"to_emulator": [], "emulator_ttfb": [], "after_first_byte": []}
    for report in results:
        if not isinstance(report, CallReport) or report.first_audio_ms is None or report.uuid not in placed:
            continue
        t0, text = placed[report.uuid]
        matched = by_text.get(text)
        if matched is None:
            continue
        heard = t0 + report.first_audio_ms / 1000
        parts["to_emulator"].append(1000 * (matched["received_at"] - t0))
        parts["emulator_ttfb"].append(1000 * (matched["first_byte_at"] - matched["received_at"]))
        parts["after_first_byte"].append(1000 * (heard - matched["first_byte_at"]))
    if not parts["to_emulator"]:
        return None
    return {name: {"p50_ms": _percentile(values, 50), "p99_ms": _percentile(values, 99), "n": len(values)}
            for name, values in parts.items()}


async def _cache_figures(stack: BenchStack, lookups0: tuple[int, int] | None,
                         metrics_ports: list[int]) -> tuple[dict[str, Any], float | None]:
    hits1, misses1 = await stack.redis_lookups()
    hits0, misses0 = lookups0 or (0, 0)
    cache: dict[str, Any] = {"redis_hits": hits1 - hits0, "redis_misses": misses1 - misses0}
    scraped = await _scrape_lookups(metrics_ports) if metrics_ports else None
    if scraped:
        cache.update(scraped, source="bridge metrics")
        hits = sum(v for k, v in scraped.items() if k.endswith("_hits"))
        total = hits + sum(v for k, v in scraped.items() if k.endswith("_misses"))
    else:
        cache["source"] = "redis"
        hits, total = cache["redis_hits"], cache["redis_hits"] + cache["redis_misses"]
    return cache, round(hits / total, 4) if total else None


# --- `voice-bridge bench` -------------------------------------------------------------------------------


def _calls_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--calls: expected a number or numbers separated by commas, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--calls: every count must be at least 1, got {text!r}")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--calls", type=_calls_list, default=[100], metavar="N[,N...]",
               help="concurrent simulated calls; several counts run one after another")
    add_option(parser, "--duration", type=float, default=10.0, help="seconds each call lasts")
    add_option(parser, "--ramp", type=float, default=1.0, help="seconds over which the calls start")
    add_option(parser, "--scenario", choices=list(SCENARIOS), default="silence",
               help="what the bridge plays: "
               + "; ".join(f"{k}: {v.description}" for k, v in SCENARIOS.items()).replace("%", "%%"))
    parser.add_argument("--baseline", action="store_true",
                        help="also run the common design (bridge.sim.baseline: a task per call, sleep(0.02) after each "
                             "write) through the same scenario and show both side by side")
    add_option(parser, "--workers", type=int, default=1, metavar="N",
               help="run the bridge as `serve --workers N` (N processes sharing the port)")
    add_option(parser, "--ttfb-ms", type=float, default=100.0,
               help="the emulator's delay in ms before each first audio byte (whole-path scenarios)")
    parser.add_argument("--pin", action="store_true",
                        help="put the bridge on one CPU core and the simulated callers (and Redis, the emulator) "
                             "on the others")
    parser.add_argument("--floor", action="store_true",
                        help="also run the physical floor (a C epoll server that only sends one tone frame per call "
                             "per 20 ms and discards what arrives) with the same callers: the yardstick for CPU per "
                             "call-second")
    parser.add_argument("--floor-source", type=Path, default=None, metavar="PATH",
                        help="the floor's C source, compiled with cc -O2 into a cache directory; implies --floor "
                             "[default ../shared/bench/floor.c relative to the repository]")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (a list)")


def resolve_floor(source: Path | None) -> Path:
    """The floor binary, built from `source` or the default source; FloorError names what is missing."""
    from bridge.sim.bench.floor import FloorError, build_floor, default_floor_source

    chosen = source or default_floor_source()
    if chosen is None:
        raise FloorError("--floor: no floor.c found beside the repository (../shared/bench/floor.c); "
                         "pass --floor-source PATH")
    return build_floor(chosen)


def run(args: argparse.Namespace) -> int:
    from bridge.server import run_event_loop

    if args.workers < 1:
        print("voice-bridge bench: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.baseline and SCENARIOS[args.scenario].baseline_args is None:
        print(f"voice-bridge bench: scenario {args.scenario} has no baseline (the baseline does not synthesize speech)",
              file=sys.stderr)
        return 2
    floor_binary = None
    try:
        if args.floor or args.floor_source is not None:
            floor_binary = resolve_floor(args.floor_source)
        result = run_event_loop(_run_and_print(args, floor_binary))
    except (ValueError, RuntimeError) as exc:
        print(f"voice-bridge bench: {exc}", file=sys.stderr)
        return 2
    return result


async def _run_and_print(args: argparse.Namespace, floor_binary: Path | None = None) -> int:
    results: list[BenchResult] = []
    async with contextlib.AsyncExitStack() as exits:
        stack = None
        if SCENARIOS[args.scenario].whole_path:
            stack = await exits.enter_async_context(BenchStack(args.ttfb_ms))
        for calls in args.calls:
            group = [await run_bench(calls, args.duration, scenario=args.scenario, ramp_s=args.ramp, pin=args.pin,
                                     workers=args.workers, stack=stack)]
            if args.baseline:
                group.append(await run_bench(calls, args.duration, scenario=args.scenario, ramp_s=args.ramp,
                                             pin=args.pin, server="baseline", stack=stack))
            if floor_binary is not None:
                group.append(await run_bench(calls, args.duration, scenario=args.scenario, ramp_s=args.ramp,
                                             pin=args.pin, server="floor", floor_binary=floor_binary))
            results += group
            if not args.json:
                print(comparison_table(group) if len(group) > 1 else group[0].table(), flush=True)
                print(flush=True)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results]))
    return 0 if all(r.failed == 0 for r in results if r.server == "bridge") else 1
