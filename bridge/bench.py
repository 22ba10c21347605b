"""`voice-bridge bench`: N concurrent simulated calls against one bridge process, with a pacing report.

The bridge runs as a separate process (`python -m bridge serve --bridge-port 0`), so its CPU and memory can
be read from /proc and, with `--pin`, it can sit alone on a core while this process drives the callers
(`bridge.caller.place_call`, all sharing one sending ticker) from another core.

Calls start spread over `--ramp` seconds. Once all are up, the bench sends the bridge SIGUSR1, which logs the
media clock's statistics and starts them afresh; a second SIGUSR1 shortly before the first call ends logs
the statistics of that steady-state window (every call live), which is what the report shows as clock
lateness, together with the bridge's CPU over the same window. Per-call figures (realtime ratio, bursts,
gaps, first audio) cover each whole call, as the caller heard it.

Scenarios say what the bridge plays; `SCENARIOS` is the place to add more (the load benchmark of the whole
call path adds Redis-backed ones).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from bridge.caller import CallReport, place_call, sender_stats

__all__ = ["Scenario", "SCENARIOS", "BenchResult", "run_bench", "configure_parser", "run"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What the bridge is started with and what each simulated caller does."""

    description: str
    serve_args: tuple[str, ...] = ()
    caller_kwargs: Callable[[int], dict[str, Any]] = lambda i: {}


SCENARIOS: dict[str, Scenario] = {
    "silence": Scenario("the bridge plays silence (its idle state): the clock alone", serve_args=("--silence",)),
    "tone": Scenario("the bridge plays a 400 Hz tone through every call's queue (play_frames: the path speech takes)",
                     serve_args=("--tone", "400")),
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

    def table(self) -> str:
        def f(value: Any, fmt: str = "{}") -> str:
            return "-" if value is None else fmt.format(value)

        rows = [
            ("scenario", self.scenario),
            ("calls (completed / failed)", f"{self.calls} ({self.completed} / {self.failed})"),
            ("duration per call", f"{self.duration_s:g} s"),
            ("realtime ratio, worst low / high", f"{f(self.realtime_ratio_min, '{:.4f}')} / "
                                                 f"{f(self.realtime_ratio_max, '{:.4f}')}"),
            ("worst burst (frames in 20 ms)", str(self.worst_burst_frames)),
            ("worst gap", f(self.worst_gap_ms, "{:.1f} ms")),
            ("first frame p50 / p99", f"{f(self.first_frame_ms_p50, '{:.1f}')} / {f(self.first_frame_ms_p99, '{:.1f}')} ms"),
            ("first audio p50 / p99", f"{f(self.first_audio_ms_p50, '{:.1f}')} / {f(self.first_audio_ms_p99, '{:.1f}')} ms"),
            ("clock lateness p50 / p99 / max", f"{f(self.clock_lateness_ms_p50)} / {f(self.clock_lateness_ms_p99)} / "
                                               f"{f(self.clock_lateness_ms_max)} ms"),
            ("clock tick work p99", f(self.clock_tick_work_ms_p99, "{} ms")),
            ("clock resyncs", f(self.clock_resyncs)),
            ("bridge CPU", f"{f(self.server_cpu_percent, '{:.1f}')} % of a core "
                           f"({f(self.server_cpu_user_percent, '{:.1f}')} % user; "
                           f"{f(self.server_cpu_ms_per_call_s, '{:.3f}')} ms per call-second)"),
            ("bridge RSS idle / per call", f"{f(self.server_rss_idle_mb, '{:.1f}')} MB / "
                                           f"{f(self.server_rss_kb_per_call, '{:.1f}')} KB"),
            ("callers CPU (this process)", f"{self.callers_cpu_percent:.1f} % of a core"),
            ("callers ticker worst lateness", f"{self.callers_ticker_late_max_ms:.1f} ms"),
            ("hang-ups", ", ".join(f"{k}={v}" for k, v in sorted(self.hangups.items()))),
            ("pinned", "bridge on one core, callers on another" if self.pinned else "no"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.errors:
            lines.append(f"errors ({len(self.errors)}): " + "; ".join(self.errors[:5]))
        return "\n".join(lines)


# --- the bridge process ---------------------------------------------------------------------------------


class BridgeProcess:
    """`python -m bridge serve` on a free port, its JSON log lines read as they come."""

    def __init__(self, serve_args: tuple[str, ...], max_calls: int) -> None:
        self.serve_args = serve_args
        self.max_calls = max_calls
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.stats: list[dict[str, Any]] = []
        self.stopped: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self._listening = asyncio.Event()
        self._stats_seen = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 20.0) -> None:
        cmd = [sys.executable, "-m", "bridge", "serve", "--bridge-host", "127.0.0.1", "--bridge-port", "0",
               "--bridge-max-calls", str(self.max_calls), "--bridge-shutdown-grace", "1",
               "--log-format", "json", "--log-level", "info", *self.serve_args]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read_log())
        try:
            await asyncio.wait_for(self._listening.wait(), timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
            raise RuntimeError(f"the bridge did not start listening within {timeout_s} s: "
                               + "; ".join(self.warnings[-3:])) from None

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                self.warnings.append(raw.decode(errors="replace").strip())
                continue
            event = line.get("event")
            if event == "listening":
                self.port = int(line["port"])
                self._listening.set()
            elif event == "clock stats":
                async with self._stats_seen:
                    self.stats.append(line["clock"])
                    self._stats_seen.notify_all()
            elif event == "stopped":
                self.stopped = line
            elif line.get("level") in ("warning", "error") and event not in ("call ended",):
                self.warnings.append(f"{event}: {line.get('error', '')}".strip(": "))

    async def snapshot_stats(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """Ask for the clock statistics since the previous snapshot (SIGUSR1) and wait for them."""
        assert self.proc is not None
        async with self._stats_seen:
            before = len(self.stats)
            self.proc.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(self._stats_seen.wait_for(lambda: len(self.stats) > before), timeout_s)
            except asyncio.TimeoutError:
                return None
            return self.stats[-1]

    def cpu_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the bridge process so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks  # utime, stime

    def rss_kb(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


# --- the run ---------------------------------------------------------------------------------------------


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))
    return round(ordered[index], 2)


async def run_bench(calls: int, duration_s: float, *, scenario: str = "silence", ramp_s: float = 1.0,
                    pin: bool = False) -> BenchResult:
    chosen = SCENARIOS[scenario]
    if duration_s < ramp_s + 2:
        raise ValueError(f"--duration must exceed --ramp by at least 2 s (got {duration_s} and {ramp_s})")
    bridge = BridgeProcess(chosen.serve_args, max_calls=max(2000, calls + 100))
    await bridge.start()
    assert bridge.proc is not None and bridge.port is not None
    pinned = False
    if pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            os.sched_setaffinity(bridge.proc.pid, {cpus[0]})
            os.sched_setaffinity(0, set(cpus[1:]))
            pinned = True
    try:
        await asyncio.sleep(0.5)
        rss_idle = bridge.rss_kb()
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def one(i: int) -> CallReport | BaseException:
            await asyncio.sleep(i * ramp_s / calls)
            try:
                return await place_call("127.0.0.1", bridge.port, duration_s=duration_s,
                                        max_wait_s=duration_s + 30, **chosen.caller_kwargs(i))
            except Exception as exc:  # noqa: BLE001 - a failed call is a result to report
                return exc

        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        tasks = [asyncio.create_task(one(i)) for i in range(calls)]
        window_start = ramp_s + 0.5
        window_end = duration_s - 0.5
        await asyncio.sleep(max(0.0, started + window_start - loop.time()))
        await bridge.snapshot_stats()  # discard the ramp-up
        cpu_a, t_a = bridge.cpu_s(), time.monotonic()
        await asyncio.sleep(max(0.0, started + (window_start + window_end) / 2 - loop.time()))
        rss_load = bridge.rss_kb()
        await asyncio.sleep(max(0.0, started + window_end - loop.time()))
        window = await bridge.snapshot_stats()
        cpu_b, t_b = bridge.cpu_s(), time.monotonic()
        results = await asyncio.gather(*tasks)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        wall1 = time.monotonic()
    finally:
        await bridge.stop()
    reports = [r for r in results if isinstance(r, CallReport)]
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, CallReport)]
    errors += [f"{r.uuid}: {r.error}" for r in reports if r.error]
    hangups: dict[str, int] = {}
    for r in reports:
        hangups[r.hangup] = hangups.get(r.hangup, 0) + 1
    ratios = [r.realtime_ratio for r in reports if r.realtime_ratio is not None]
    gaps = [r.worst_gap_ms for r in reports if r.worst_gap_ms is not None]
    first_frames = [r.first_frame_ms for r in reports if r.first_frame_ms is not None]
    first_audio = [r.first_audio_ms for r in reports if r.first_audio_ms is not None]
    lateness = (window or {}).get("lateness", {})
    work = (window or {}).get("tick_work", {})
    window_s = t_b - t_a
    cpu_user = cpu_b[0] - cpu_a[0]
    cpu_window = cpu_user + cpu_b[1] - cpu_a[1]
    callers_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return BenchResult(
        scenario=scenario,
        calls=calls,
        duration_s=duration_s,
        completed=sum(1 for r in reports if r.hangup == "caller" and not r.error),
        failed=calls - sum(1 for r in reports if r.hangup == "caller" and not r.error),
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
        server_cpu_ms_per_call_s=round(1000 * cpu_window / (window_s * calls), 4) if window_s > 0 else None,
        server_rss_idle_mb=round(rss_idle / 1024, 1),
        server_rss_kb_per_call=round((rss_load - rss_idle) / calls, 1),
        callers_cpu_percent=round(100 * callers_cpu / (wall1 - wall0), 1),
        callers_ticker_late_max_ms=sender_stats()["lateness_max_ms"],
        hangups=hangups,
        errors=errors[:20] + bridge.warnings[:20],
        pinned=pinned,
        clock_window=window,
    )


# --- `voice-bridge bench` -------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=100, help="concurrent simulated calls (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each call lasts (default 10)")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which the calls start (default 1)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="silence",
                        help="what the bridge plays: " + "; ".join(f"{k}: {v.description}" for k, v in SCENARIOS.items()))
    parser.add_argument("--pin", action="store_true",
                        help="put the bridge on one CPU core and the simulated callers on the others")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from bridge.server import run_event_loop

    if args.calls < 1:
        print("voice-bridge bench: --calls must be at least 1", file=sys.stderr)
        return 2
    try:
        result = run_event_loop(_run_and_print(args))
    except (ValueError, RuntimeError) as exc:
        print(f"voice-bridge bench: {exc}", file=sys.stderr)
        return 2
    return result


async def _run_and_print(args: argparse.Namespace) -> int:
    result = await run_bench(args.calls, args.duration, scenario=args.scenario, ramp_s=args.ramp, pin=args.pin)
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(result.table())
    return 0 if result.failed == 0 else 1

