"""Soak benchmark: many short calls through a real `voice-bridge serve`; does memory stay flat?

Places `--calls` calls, `--concurrency` at a time, each `--seconds` long (a range: each call draws its own
length), against `python -m bridge serve` (the whole path for dialogue scenarios: a private Redis and the
ElevenLabs emulator, as `voice-bridge bench` starts them). After a warm-up wave, and then every
`--every` calls, it lets the running calls finish (the bridge is idle then, so live calls do not blur the
figure) and samples the bridge's RSS, open file descriptors and live asyncio tasks; the SIGUSR1 stats line
gives the garbage collector's passes and longest pause over each window. It reports the growth per 1,000
calls since the warm-up: a leak shows as RSS (or fds, or tasks) rising by a steady amount per 1,000 calls.
Not a timed test: a measurement (figures in docs/reliability.md).

    .venv/bin/python -m bridge.sim.bench.soak --calls 5000 --concurrency 50 --seconds 2-3 [--scenario all-static]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import time
import uuid as uuid_module
from typing import Any

from bridge.sim.bench.load import SCENARIOS, BenchStack, BridgeProcess
from bridge.sim.caller import place_call

__all__ = ["Sample", "SoakResult", "main", "run_soak"]


@dataclasses.dataclass
class Sample:
    """The idle bridge after `calls` calls."""

    calls: int
    rss_mb: float
    fds: int
    tasks: int | None
    gc_passes: list[int]
    """Garbage collector passes by generation since the previous sample."""
    gc_max_ms: list[float]
    """Longest pass by generation since the previous sample."""
    seconds: float


@dataclasses.dataclass
class SoakResult:
    scenario: str
    calls: int
    concurrency: int
    seconds: tuple[float, float]
    failed: int
    samples: list[Sample]

    @property
    def warm(self) -> Sample:
        return self.samples[0]

    def per_1000(self, sample: Sample) -> tuple[float, float]:
        """(RSS MB, fds) grown per 1,000 calls from the warm-up sample to `sample`."""
        calls = sample.calls - self.warm.calls
        if calls <= 0:
            return 0.0, 0.0
        return ((sample.rss_mb - self.warm.rss_mb) * 1000 / calls, (sample.fds - self.warm.fds) * 1000 / calls)

    def table(self) -> str:
        header = ("| calls | RSS MB | fds | tasks | RSS growth MB / 1,000 calls | fds / 1,000 calls "
                  "| gc passes gen0/1/2 | longest gc pass ms gen0/1/2 |")
        rows = [header, "|---:|---:|---:|---:|---:|---:|---|---|"]
        for sample in self.samples:
            rss, fds = self.per_1000(sample)
            rows.append(
                f"| {sample.calls} | {sample.rss_mb:.1f} | {sample.fds} "
                f"| {sample.tasks if sample.tasks is not None else '?'} "
                f"| {rss:+.2f} | {fds:+.2f} | {'/'.join(map(str, sample.gc_passes))} "
                f"| {'/'.join(f'{ms:.1f}' for ms in sample.gc_max_ms)} |")
        last = self.samples[-1]
        rss, fds = self.per_1000(last)
        rows.append("")
        rows.append(f"{self.calls} calls ({self.failed} failed), {self.concurrency} at a time, "
                    f"{self.seconds[0]:g}-{self.seconds[1]:g} s each, scenario {self.scenario}: RSS "
                    f"{self.warm.rss_mb:.1f} -> {last.rss_mb:.1f} MB ({rss:+.2f} MB per 1,000 calls), fds "
                    f"{self.warm.fds} -> {last.fds}, "
                    f"longest gc pass {max(max(s.gc_max_ms) for s in self.samples):.1f} ms")
        return "\n".join(rows)


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def _sample(bridge: BridgeProcess, calls: int, started: float) -> Sample:
    stats = await bridge.snapshot_stats() or {}
    gc_figures: dict[str, Any] = stats.get("gc") or {}
    assert bridge.proc is not None
    return Sample(
        calls=calls,
        rss_mb=round(bridge.rss_kb() / 1024, 2),
        fds=_fds(bridge.proc.pid),
        tasks=stats.get("tasks"),
        gc_passes=[int(gc_figures.get(f"gen{g}_passes", 0)) for g in range(3)],
        gc_max_ms=[float(gc_figures.get(f"gen{g}_max_ms", 0.0)) for g in range(3)],
        seconds=round(time.monotonic() - started, 1),
    )


async def run_soak(calls: int, concurrency: int, seconds: tuple[float, float], *, scenario: str = "all-static",
                   every: int = 1000, seed: int = 12, settle_s: float = 1.0,
                   progress: Any = None) -> SoakResult:
    """Run the soak; `progress(sample)` is called after each sample (the CLI prints it)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    if calls < 1 or concurrency < 1 or every < 1:
        raise ValueError(f"--calls, --concurrency and --every must be at least 1 (got {calls}, {concurrency}, {every})")
    low, high = seconds
    if not 0 < low <= high:
        raise ValueError(f"--seconds must be a range 0 < LOW <= HIGH, got {low}-{high}")
    chosen = SCENARIOS[scenario]
    rng = random.Random(seed)
    nonce = uuid_module.uuid4().hex[:8]
    stack = BenchStack() if chosen.whole_path else None
    if stack is not None:
        await stack.start()
    failed = 0
    try:
        env = await stack.prepare("soak", chosen) if stack is not None else None
        bridge = BridgeProcess(chosen.serve_args, max_calls=concurrency * 2 + 100, env=env)
        await bridge.start()
        started = time.monotonic()
        try:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                nonlocal failed
                async with semaphore:
                    duration = rng.uniform(low, high)
                    call_uuid = uuid_module.uuid4()
                    if stack is not None and chosen.call_vars is not None:
                        variables = chosen.call_vars(i, nonce)
                        if variables is not None:
                            await stack.set_call_vars(call_uuid, variables)
                    try:
                        report = await place_call("127.0.0.1", bridge.port or 0, uuid=call_uuid, duration_s=duration,
                                                  max_wait_s=duration + 30, **chosen.caller_kwargs(i))
                    except OSError:
                        failed += 1
                        return
                    if report.error is not None or report.hangup != "caller":
                        failed += 1

            async def wave(first: int, count: int) -> None:
                await asyncio.gather(*(one(first + k) for k in range(count)))
                await asyncio.sleep(settle_s)  # the last calls' connections close, their tasks end

            samples: list[Sample] = []
            done = min(concurrency, calls)
            await wave(0, done)  # warm-up: lazy clients, pools, caches, the first fragments read
            await bridge.snapshot_stats()
            samples.append(await _sample(bridge, done, started))
            if progress is not None:
                progress(samples[-1])
            while done < calls:
                count = min(every - done % every if done % every else every, calls - done)
                await wave(done, count)
                done += count
                samples.append(await _sample(bridge, done, started))
                if progress is not None:
                    progress(samples[-1])
        finally:
            await bridge.stop()
    finally:
        if stack is not None:
            await stack.aclose()
    return SoakResult(scenario, calls, concurrency, (low, high), failed, samples)


def _seconds(raw: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in raw.split("-", 1)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds as N or LOW-HIGH (e.g. 2-3), got {raw!r}") from None
    return (parts[0], parts[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls in all [default 5000]")
    parser.add_argument("--concurrency", type=int, default=50, help="calls at a time [default 50]")
    parser.add_argument("--seconds", type=_seconds, default=(2.0, 3.0),
                        help="each call's length, N or LOW-HIGH [default 2-3]")
    parser.add_argument("--every", type=int, default=1000, help="sample the idle bridge every N calls [default 1000]")
    parser.add_argument("--scenario", default="all-static", choices=sorted(SCENARIOS),
                        help="what the bridge plays (the `voice-bridge bench` scenarios; default all-static)")
    parser.add_argument("--json", metavar="PATH", help="also write the samples as JSON")
    args = parser.parse_args(argv)

    def progress(sample: Sample) -> None:
        print(f"after {sample.calls} calls ({sample.seconds:.0f} s): RSS {sample.rss_mb:.1f} MB, fds {sample.fds}, "
              f"tasks {sample.tasks}, gc passes {sample.gc_passes}, longest {sample.gc_max_ms} ms",
              file=sys.stderr, flush=True)

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.run
    try:
        result = runner(run_soak(args.calls, args.concurrency, args.seconds, scenario=args.scenario,
                                         every=args.every, progress=progress))
    except ValueError as exc:
        parser.error(str(exc))
    print(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**dataclasses.asdict(result), "table": result.table()}, f, indent=2)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
