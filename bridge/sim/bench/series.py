"""Load benchmark series: `voice-bridge bench` runs over scenarios, sizes and servers, with medians.

Each cell (scenario x calls x server x workers) runs `--repeat` times; the table shows the median of each
figure over the repeats (the worst-call figures of a run are medians of the runs' worst calls). Redis, the
emulator and the fragments start once and are shared by every whole-path run (each run starts from a
flushed database). The machine's load average is printed before every run, because other work on the same
cores changes the figures: take final figures when it is low.

    .venv/bin/python bridge/sim/bench/series.py --scenarios all-static --calls 100,500,1000 --baseline \
        [--workers 1,2] [--repeat 3] [--duration 10 --ramp 2] [--pin] [--json out.json]

The markdown table it prints is the one in docs/benchmarks.md ("The whole call path").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
from typing import Any

from bridge.server import run_event_loop
from bridge.sim.bench.load import SCENARIOS, BenchResult, BenchStack, run_bench

# (column title, BenchResult field, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("realtime ratio worst low / high", "realtime_ratio_min|realtime_ratio_max", "{:.4f}"),
    ("worst burst", "worst_burst_frames", "{:g}"),
    ("worst gap ms", "worst_gap_ms", "{:.1f}"),
    ("first audio p50 / p99 ms", "first_audio_ms_p50|first_audio_ms_p99", "{:.1f}"),
    (
        "clock lateness p50 / p99 / max ms",
        "clock_lateness_ms_p50|clock_lateness_ms_p99|clock_lateness_ms_max",
        "{:.1f}",
    ),
    ("bridge CPU % (user)", "server_cpu_percent|server_cpu_user_percent", "{:.1f}"),
    ("RSS per call KB", "server_rss_kb_per_call", "{:.1f}"),
    ("cache hit ratio", "cache_hit_ratio", "{:.1%}"),
    ("emulator TTFB p99 ms", "emulator.ttfb_ms_p99", "{:.1f}"),
]


def _value(result: BenchResult, field: str) -> float | None:
    if "." in field:
        outer, inner = field.split(".", 1)
        return (getattr(result, outer) or {}).get(inner)
    value = getattr(result, field)
    if field == "clock_lateness_ms_p50" and result.server == "baseline":
        return None
    return value


def median_of(results: list[BenchResult], field: str) -> float | None:
    values = [v for v in (_value(r, field) for r in results) if v is not None]
    return statistics.median(values) if values else None


def cell(results: list[BenchResult], fields: str, fmt: str) -> str:
    parts = []
    for field in fields.split("|"):
        value = median_of(results, field)
        parts.append("-" if value is None else fmt.format(value))
    return " / ".join(parts)


def markdown_row(results: list[BenchResult]) -> str:
    first = results[0]
    server = first.server + (f" x{first.workers}" if first.workers > 1 else "")
    failed = sum(r.failed for r in results)
    cells = [str(first.calls), first.scenario, server + ("" if not failed else f" ({failed} failed)")]
    cells += [cell(results, fields, fmt) for _, fields, fmt in COLUMNS]
    return "| " + " | ".join(cells) + " |"


def markdown_header() -> str:
    titles = ["calls", "scenario", "server"] + [title for title, _, _ in COLUMNS]
    return "| " + " | ".join(titles) + " |\n|" + "---|" * len(titles)


async def main(args: argparse.Namespace) -> int:
    rows: list[str] = []
    everything: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as exits:
        stack = None
        if any(SCENARIOS[s].whole_path for s in args.scenarios):
            stack = await exits.enter_async_context(BenchStack(args.ttfb_ms))
        for scenario in args.scenarios:
            for calls in args.calls:
                servers = [("bridge", w) for w in args.workers]
                if args.baseline and SCENARIOS[scenario].baseline_args is not None:
                    servers.append(("baseline", 1))
                for server, workers in servers:
                    group: list[BenchResult] = []
                    for attempt in range(args.repeat):
                        load = os.getloadavg()
                        print(f"# {scenario} {calls} calls, {server} x{workers}, run {attempt + 1}/{args.repeat}; "
                              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr, flush=True)
                        result = await run_bench(calls, args.duration, scenario=scenario, ramp_s=args.ramp,
                                                 pin=args.pin and workers == 1, server=server, workers=workers,
                                                 stack=stack)
                        group.append(result)
                        everything.append(dataclasses.asdict(result))
                        if args.verbose:
                            print(result.table(), file=sys.stderr, flush=True)
                    rows.append(markdown_row(group))
                    print(rows[-1], file=sys.stderr, flush=True)
    print(markdown_header())
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(everything, out, indent=1)
    return 0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=["all-static"],
                        help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--calls", type=_ints, default=[100, 500, 1000])
    parser.add_argument("--workers", type=_ints, default=[1], help="bridge worker counts to run, e.g. 1,2")
    parser.add_argument(
        "--baseline", action="store_true", help="also run bridge.sim.baseline where the scenario has one"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--ramp", type=float, default=2.0)
    parser.add_argument("--ttfb-ms", type=float, default=100.0)
    parser.add_argument(
        "--pin", action="store_true", help="pin single-worker bridges to one core, the rest to the other"
    )
    parser.add_argument("--json", default="", help="write every run's full result here")
    parser.add_argument("--verbose", action="store_true", help="print each run's full table to stderr")
    parsed = parser.parse_args()
    unknown = [s for s in parsed.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    sys.exit(run_event_loop(main(parsed)))
