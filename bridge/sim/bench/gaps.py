"""Where the callers hear gaps: each call's worst gap between two received frames, and when it fell.

A stall of the bridge's event loop (a garbage-collector pass, a burst of set-ups or hang-ups) is heard by
every live call at the same instant, so the worst gaps of many calls falling in the same second point at
the bridge; gaps spread over the run are the callers' own lag (the C floor, `--server floor`, shows what
the callers alone produce). The run is `bridge.sim.bench.load.run_bench`; besides the gaps it prints the
bridge's clock lateness and garbage-collector passes from the end of the measuring window to its stop,
which is when the calls hang up.

    .venv/bin/python -m bridge.sim.bench.gaps --calls 1000 --scenario all-static [--server floor]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys

from bridge.sim.bench.load import SCENARIOS, SERVERS, run_bench
from bridge.sim.caller import CallReport

__all__ = ["Gap", "main", "worst_gaps"]

Gap = tuple[float, float]
"""(length in ms, seconds after the first call's UUID at which it began)."""


def worst_gaps(reports: list[CallReport]) -> list[Gap]:
    """Each call's worst gap between consecutive frames, with when it began on a clock shared by all calls."""
    if not reports:
        return []
    t0 = min(r.uuid_at for r in reports)
    gaps: list[Gap] = []
    for report in reports:
        arrivals = report.arrivals_ms
        if len(arrivals) < 2:
            continue
        i = max(range(1, len(arrivals)), key=lambda k: arrivals[k] - arrivals[k - 1])
        gaps.append((arrivals[i] - arrivals[i - 1], report.uuid_at - t0 + arrivals[i - 1] / 1000))
    return gaps


def summary(gaps: list[Gap]) -> dict[str, object]:
    lengths = sorted(g[0] for g in gaps)
    seconds = collections.Counter(int(g[1]) for g in gaps)
    return {
        "calls": len(gaps),
        "worst_gap_ms": round(lengths[-1], 1) if lengths else None,
        "median_calls_worst_gap_ms": round(statistics.median(lengths), 1) if lengths else None,
        "worst_gaps_by_second": dict(sorted(seconds.items())),
    }


async def _run(args: argparse.Namespace) -> int:
    reports: list[CallReport] = []
    result = await run_bench(args.calls, args.duration, scenario=args.scenario, ramp_s=args.ramp, pin=True,
                             server=args.server, keep_reports=reports)
    out = {
        **summary(worst_gaps(reports)),
        "realtime_ratio_min": result.realtime_ratio_min,
        "realtime_ratio_p50": result.realtime_ratio_p50,
        "failed": result.failed,
        "callers_loop_lag_max_ms": result.callers_loop_lag_max_ms,
        "loadavg": result.loadavg,
        "clock_after_window": result.clock_after_window,
    }
    print(json.dumps(out, indent=1))
    return 0 if result.failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.gaps", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="all-static")
    parser.add_argument("--server", choices=sorted(SERVERS), default="bridge")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each call lasts [default 10]")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the calls start [default 2]")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
