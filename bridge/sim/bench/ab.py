"""Before/after: the same callers against the floor and several bridge variants, interleaved, in one run.

A variant is a source tree (another checkout, e.g. `git worktree add /tmp/base main`) and settings for the
bridge's environment, so a change is measured against the code it replaces under the same load of the
machine: every round runs every variant once, one after the other, and the load average is recorded
before each run. The medians over rounds are printed at the end, with each run's ratio to the floor of
its own round.

    .venv/bin/python -m bridge.sim.bench.ab --calls 500 --rounds 3 \\
        --variant old=/tmp/base --variant new=. \\
        --variant python-tick=.:BRIDGE_NATIVE_TICK=false [--scenario tone] [--json out.json]

Each variant's bridge runs as `python -m bridge serve` from its tree (the working directory and
PYTHONPATH point there), with this interpreter; the callers are this tree's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bridge.sim.bench.floor import FloorError
from bridge.sim.bench.load import resolve_floor, run_bench

__all__ = ["Variant", "main", "parse_variant"]


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    tree: Path
    env: dict[str, str]


def parse_variant(text: str) -> Variant:
    """`NAME=DIR[:VAR=VALUE,...]` -> Variant; argparse names the option in the error."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR[:VAR=VALUE,...], got {text!r}")
    tree_text, _, env_text = rest.partition(":")
    tree = Path(tree_text).resolve()
    if not (tree / "bridge" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"{tree} is not a voice-bridge source tree (no bridge/__main__.py)")
    env: dict[str, str] = {}
    for item in filter(None, env_text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"expected VAR=VALUE in {text!r}, got {item!r}")
        env[key] = value
    return Variant(name, tree, env)


async def main(args: argparse.Namespace) -> int:
    try:
        floor = None if args.no_floor else resolve_floor(args.floor_source)
    except FloorError as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 2
    base_env = dict(os.environ)
    base_cwd = Path.cwd()
    runs: list[dict[str, Any]] = []
    names = (["floor"] if floor is not None else []) + [v.name for v in args.variant]
    try:
        for rnd in range(args.rounds):
            for name in names:
                variant = next((v for v in args.variant if v.name == name), None)
                os.environ.clear()
                os.environ.update(base_env)
                if variant is not None:
                    os.environ.update(variant.env)
                    os.environ["PYTHONPATH"] = str(variant.tree)
                    os.chdir(variant.tree)
                load = os.getloadavg()[0]
                result = await run_bench(args.calls, args.duration, scenario=args.scenario, ramp_s=args.ramp,
                                         pin=True, server="floor" if variant is None else "bridge", stack=None,
                                         floor_binary=floor)
                os.chdir(base_cwd)
                run = dataclasses.asdict(result) | {"variant": name, "round": rnd, "load_before": load}
                runs.append(run)
                print(f"# round {rnd + 1}/{args.rounds} {name}: {_cost(run):,.0f} µs per call-second, realtime "
                      f"{result.realtime_ratio_min}-{result.realtime_ratio_max}, load {load:.2f}",
                      file=sys.stderr, flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(runs, indent=1), encoding="utf-8")
    finally:
        os.environ.clear()
        os.environ.update(base_env)
        os.chdir(base_cwd)
    print(table(runs, names))
    return 0


def _cost(run: dict[str, Any]) -> float:
    return 1000 * (run["server_cpu_ms_per_call_s"] or 0.0)


def table(runs: list[dict[str, Any]], names: list[str]) -> str:
    """Medians per variant: CPU per call-second (user / system), ratio to its round's floor, pacing."""
    floors = {r["round"]: _cost(r) for r in runs if r["variant"] == "floor"}
    lines = [("| variant | runs | CPU per call-second | of which user | x floor (same round) "
              "| realtime ratio low / high | callers' loop lag max | load avg (1 min) |"),
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        cost = [_cost(r) for r in mine]
        user = [_cost(r) * r["server_cpu_user_percent"] / r["server_cpu_percent"] for r in mine
                if r["server_cpu_percent"]]
        ratio = [_cost(r) / floors[r["round"]] for r in mine if floors.get(r["round"])]
        loads = [r["load_before"] for r in mine]
        lines.append(
            f"| {name} | {len(mine)} | {statistics.median(cost):,.0f} µs | "
            f"{statistics.median(user) if user else 0:,.0f} µs | "
            f"{statistics.median(ratio) if ratio else float('nan'):.2f} | "
            f"{statistics.median(r['realtime_ratio_min'] for r in mine):.4f} / "
            f"{statistics.median(r['realtime_ratio_max'] for r in mine):.4f} | "
            f"{statistics.median(r['callers_loop_lag_max_ms'] or 0 for r in mine):.0f} ms | "
            f"{min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="NAME=DIR[:VAR=VALUE,...]: a source tree and the bridge's extra environment")
    parser.add_argument("--calls", type=int, default=500, help="concurrent calls (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every variant once (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each call lasts (default 10)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the calls start (default 2)")
    parser.add_argument("--scenario", default="tone", help="what the bridge plays (default tone; see `bench`)")
    parser.add_argument("--floor-source", type=Path, default=None, metavar="PATH", help="floor.c (see overhead)")
    parser.add_argument("--no-floor", action="store_true", help="leave the floor out (no C compiler here)")
    parser.add_argument("--json", default="", help="write every run's full result here")
    return parser


if __name__ == "__main__":
    from bridge.server import run_event_loop

    parsed = build_parser().parse_args()
    if parsed.rounds < 1 or parsed.calls < 1:
        build_parser().error("--rounds and --calls must be at least 1")
    sys.exit(run_event_loop(main(parsed)))
