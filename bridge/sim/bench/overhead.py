"""The per-call cost table of issue 13: the physical floor, the bridge and the naive baseline, same run.

For each size (default 500 and 1,000 calls) every server takes the same callers, pinned the same way
(the server alone on the first CPU, the callers, Redis and the emulator on the others), `--repeat` times,
the servers interleaved within each repeat so that the machine's other load falls on all of them alike:

- `floor`: the physical floor (bridge.sim.bench.floor, a C epoll server: one send per call per 20 ms);
- `bridge` with the `tone` scenario and `baseline` with `tone`: the same fixed tone as the floor plays;
- `bridge` with `all-static`: the whole call path (Redis, dialogue, cached fragments) for comparison;
- with `--python-floors`, the Python floors (bridge.sim.bench.pyfloor): what Python on the bridge's event
  loop costs at the least, with callbacks or tick reads, transport writes or socket sends.

The table shows the median over the repeats of each figure: CPU of one core, CPU per call-second (µs),
its ratio to the floor's median at the same size, and pacing (realtime ratio worst low / high, worst
burst, first audio p99). Then the overload run: `--overload N` calls (1.3x what one core can pace) to the
bridge and the floor, with the admitted calls' realtime-ratio spread over calls, their first audio p99,
and how many calls were refused (closed before audio). The load average is printed before every run
(other work on the same cores changes the figures) and summarised in the table.

    .venv/bin/python -m bridge.sim.bench.overhead [--calls 500,1000] [--repeat 3] [--duration 10] \\
        [--ramp 2] [--overload 1300] [--floor-source PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bridge.sim.bench.floor import FloorError
from bridge.sim.bench.load import BenchResult, BenchStack, resolve_floor, run_bench

__all__ = ["CELLS", "Cell", "cost_table", "main", "overload_table"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One server playing one scenario: a row of the table."""

    server: str
    scenario: str
    args: tuple[str, ...] = ()
    """`pyfloor`'s variant (bridge.sim.bench.pyfloor arguments)."""

    @property
    def label(self) -> str:
        if self.server == "floor":
            return "floor (C epoll, tone)"
        if self.server == "pyfloor":
            return "Python floor (" + " ".join(a.lstrip("-") for a in self.args) + ")"
        return f"{self.server} ({self.scenario})"


CELLS: tuple[Cell, ...] = (Cell("floor", "tone"), Cell("bridge", "tone"), Cell("baseline", "tone"),
                           Cell("bridge", "all-static"))
OVERLOAD_CELLS: tuple[Cell, ...] = (Cell("bridge", "tone"), Cell("floor", "tone"))
PYTHON_FLOORS: tuple[Cell, ...] = tuple(
    Cell("pyfloor", "tone", args) for args in (
        ("--read", "callback", "--write", "transport"),
        ("--read", "decode", "--write", "transport"),
        ("--read", "tick", "--write", "transport"),
        ("--read", "callback", "--write", "socket"),
        ("--read", "tick", "--write", "socket"),
        ("--read", "lowat", "--write", "transport"),
    ))
"""The Python floors (bridge.sim.bench.pyfloor): each prices one design choice of the inbound or outbound path."""


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


CALLERS_STARVED_MS = 20.0
"""Above this, the callers' own event loop was held up long enough to read frames late and bunched: the
run's pacing figures are the callers' (other work on their core), not the server's."""


def _lag(results: list[BenchResult]) -> str:
    lag = _median([r.callers_loop_lag_max_ms for r in results])
    if lag is None:
        return "-"
    return f"{lag:.0f} ms" + (" (callers starved)" if lag > CALLERS_STARVED_MS else "")


def _load_range(results: list[BenchResult]) -> str:
    loads = [r.loadavg[0] for r in results if r.loadavg is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"


def cost_table(groups: dict[tuple[int, Cell], list[BenchResult]]) -> str:
    """The issue's table in markdown: one row per (calls, cell), medians of the repeats."""
    lines = [("| calls | server | CPU of one core | CPU per call-second | x floor | realtime ratio low / high "
              "| worst burst | first audio p99 | failed | callers' loop lag max | load avg (1 min) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (calls, cell), results in groups.items():
        cpu = _median([r.server_cpu_percent for r in results])
        per_call = _median([None if r.server_cpu_ms_per_call_s is None else 1000 * r.server_cpu_ms_per_call_s
                            for r in results])
        floor = groups.get((calls, Cell("floor", "tone")))
        floor_us = _median([None if r.server_cpu_ms_per_call_s is None else 1000 * r.server_cpu_ms_per_call_s
                            for r in floor]) if floor else None
        ratio = per_call / floor_us if per_call is not None and floor_us else None
        low = _median([r.realtime_ratio_min for r in results])
        high = _median([r.realtime_ratio_max for r in results])
        burst = _median([float(r.worst_burst_frames) for r in results])
        first = _median([r.first_audio_ms_p99 for r in results])
        failed = sum(r.failed for r in results)
        lines.append(f"| {calls} | {cell.label} | {_fmt(cpu, '{:.0f} %')} | {_fmt(per_call, '{:,.0f} µs')} "
                     f"| {_fmt(ratio, '{:.2f}')} | {_fmt(low, '{:.4f}')} / {_fmt(high, '{:.4f}')} "
                     f"| {_fmt(burst, '{:g}')} | {_fmt(first, '{:.1f} ms')} | {failed} / {calls * len(results)} "
                     f"| {_lag(results)} | {_load_range(results)} |")
    return "\n".join(lines)


def overload_table(groups: dict[tuple[int, Cell], list[BenchResult]]) -> str:
    """The overload run in markdown: what the admitted calls heard, and how many calls were refused."""
    lines = [("| calls | server | admitted / refused | realtime ratio over admitted calls p1 / p50 / p99 "
              "| worst low / high | first audio p99 (admitted) | CPU of one core | clock lateness p99 / max "
              "| callers' loop lag max | load avg (1 min) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (calls, cell), results in groups.items():
        refused = _median([float(r.refused) for r in results]) or 0.0
        spread = " / ".join(_fmt(_median([getattr(r, f"realtime_ratio_p{p}") for r in results]), "{:.4f}")
                            for p in (1, 50, 99))
        low = _median([r.realtime_ratio_min for r in results])
        high = _median([r.realtime_ratio_max for r in results])
        lateness = (f"{_fmt(_median([r.clock_lateness_ms_p99 for r in results]), '{:.1f}')} / "
                    f"{_fmt(_median([r.clock_lateness_ms_max for r in results]), '{:.1f}')} ms")
        lines.append(f"| {calls} | {cell.label} | {calls - refused:g} / {refused:g} | {spread} "
                     f"| {_fmt(low, '{:.4f}')} / {_fmt(high, '{:.4f}')} "
                     f"| {_fmt(_median([r.first_audio_ms_p99 for r in results]), '{:,.1f} ms')} "
                     f"| {_fmt(_median([r.server_cpu_percent for r in results]), '{:.0f} %')} "
                     f"| {lateness if cell.server == 'bridge' else '-'} | {_lag(results)} | {_load_range(results)} |")
    return "\n".join(lines)


def _uptime() -> str:
    load = os.getloadavg()
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


async def _series(sizes: list[int], cells: tuple[Cell, ...], args: argparse.Namespace, stack: BenchStack | None,
                  floor_binary: Path | None, everything: list[dict[str, Any]],
                  server_cpu: float = 1.0) -> dict[tuple[int, Cell], list[BenchResult]]:
    groups: dict[tuple[int, Cell], list[BenchResult]] = {}
    for calls in sizes:
        for cell in cells:
            groups[(calls, cell)] = []
        for attempt in range(args.repeat):
            for cell in cells:
                if cell.server == "floor" and floor_binary is None:
                    continue
                print(f"# {calls} calls, {cell.label}, run {attempt + 1}/{args.repeat}; {_uptime()}",
                      file=sys.stderr, flush=True)
                result = await run_bench(calls, args.duration, scenario=cell.scenario, ramp_s=args.ramp,
                                         pin=not args.no_pin, server=cell.server, stack=stack,
                                         floor_binary=floor_binary, server_args=cell.args, server_cpu=server_cpu)
                groups[(calls, cell)].append(result)
                everything.append(dataclasses.asdict(result))
                if args.verbose:
                    print(result.table(), file=sys.stderr, flush=True)
    return {key: value for key, value in groups.items() if value}


async def main(args: argparse.Namespace) -> int:
    floor_binary: Path | None = None
    if not args.no_floor:
        try:
            floor_binary = resolve_floor(args.floor_source)
        except FloorError as exc:
            print(f"overhead: {exc}", file=sys.stderr)
            return 2
    everything: list[dict[str, Any]] = []
    cells = CELLS if args.static else tuple(c for c in CELLS if c.scenario != "all-static")
    if args.python_floors:
        cells += PYTHON_FLOORS
    async with contextlib.AsyncExitStack() as exits:
        stack = await exits.enter_async_context(BenchStack(args.ttfb_ms)) if args.static else None
        cost = await _series(args.calls, cells, args, stack, floor_binary, everything)
        print(f"## Per-call cost ({args.repeat} runs each, medians; {args.duration:g} s calls)\n")
        print(cost_table(cost), flush=True)
        if args.overload:
            overload = await _series([args.overload], OVERLOAD_CELLS, args, None, floor_binary, everything,
                                     server_cpu=args.overload_cpu)
            held = f", each server held to {args.overload_cpu:g} of a core" if args.overload_cpu < 1 else ""
            print(f"\n## Overload: {args.overload} calls{held}\n")
            print(overload_table(overload), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1), encoding="utf-8")
    return 0 if all(r["failed"] == 0 for r in everything if r["calls"] in args.calls) else 1


def _sizes(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--calls: expected counts separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--calls: every count must be at least 1, got {text!r}")
    return values


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share of a core such as 0.5, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a share of a core must be above 0 and at most 1, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=_sizes, default=[500, 1000], help="sizes, comma-separated [default 500,1000]")
    parser.add_argument("--repeat", type=_count, default=3, help="runs per cell; the table shows medians [default 3]")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each call lasts [default 10]")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the calls start [default 2]")
    parser.add_argument("--overload", type=_count, default=1300,
                        help="calls of the overload run, about 1.3x what one core paces [default 1300; 0: none]")
    parser.add_argument("--overload-cpu", type=_share, default=1.0, metavar="SHARE",
                        help="hold each server of the overload run to this share of a core (a cgroup CPU quota, "
                             "root only): on a 2-core machine the callers' core cannot place 1.3x what a whole "
                             "core paces [default 1: no quota]")
    parser.add_argument("--floor-source", type=Path, default=None, metavar="PATH",
                        help="floor.c [default ../shared/bench/floor.c relative to the repository]")
    parser.add_argument("--no-floor", action="store_true", help="leave the floor out (no C compiler here)")
    parser.add_argument("--no-static", dest="static", action="store_false",
                        help="leave out the bridge's all-static row (no Redis or emulator started)")
    parser.add_argument("--python-floors", action="store_true",
                        help="add the Python floors (bridge.sim.bench.pyfloor): one row per inbound/outbound design")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the callers to cores")
    parser.add_argument("--ttfb-ms", type=float, default=100.0, help="the emulator's first-byte delay [default 100]")
    parser.add_argument("--json", default="", help="write every run's full result here")
    parser.add_argument("--verbose", action="store_true", help="print each run's full table to stderr")
    return parser


if __name__ == "__main__":
    from bridge.server import run_event_loop

    parsed = build_parser().parse_args()
    if parsed.repeat < 1:
        build_parser().error("--repeat must be at least 1")
    sys.exit(run_event_loop(main(parsed)))
