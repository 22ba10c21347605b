"""Where a profiled bridge's CPU goes: py-spy's collapsed stacks summed into the call path's parts.

`py-spy record --format raw` writes one line per distinct stack, `frame;frame;...;leaf COUNT`, root first.
Each sample is given to the first part (in `PARTS` order) one of whose patterns appears in its stack, so
the parts add up to 100 % of the samples taken while the bridge was on the CPU (py-spy leaves idle samples
out); each part is also split by what its leaf was doing (a system call that sends, receives or waits,
or Python / C work), which separates the kernel's TCP work from the interpreter's.

    .venv/bin/py-spy record --pid PID --duration 10 --rate 250 --nonblocking --native --format raw -o bridge.raw
    .venv/bin/python -m bridge.sim.bench.stacks bridge.raw [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["LEAVES", "PARTS", "main", "parse", "summarize"]

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("inbound: data_received (decode, per-message checks, on_audio / speech check)",
     ("data_received (bridge/call.py", "data_received (bridge/sim/bench/pyfloor.py")),
    ("outbound: the clock's tick (clock_tick, transport.write)",
     ("clock_tick (bridge/call.py", "_tick (bridge/clock.py", "tick (bridge/sim/bench/pyfloor.py")),
    ("the clock's scheduling (its loop, sleeps, histograms)",
     ("_run (bridge/clock.py", "clock (bridge/sim/bench/pyfloor.py")),
    ("the dialogue and its rooms (per call tasks, playlists, answers, cache reads)",
     ("bridge/dialogue_runner.py", "bridge/playlist.py", "bridge/answers.py", "bridge/speaker.py",
      "bridge/listening.py", "bridge/app.py", "bridge/dialogue.py", "voice/cache", "voice/synthesis")),
    ("queueing frames (play_frames, the call's outbound queue, the tone handler)",
     ("play_frames (bridge/call.py", "bridge/call.py", "play_tone (bridge/server.py")),
    ("accepting and ending calls (connection_made / _lost, logs)",
     ("connection_made", "connection_lost", "structlog", "bridge/ops/logs.py")),
    ("Redis client", ("redis/",)),
    ("the event loop reading sockets (libuv's uv__read: recv before data_received)", ("uv__read",)),
    ("the event loop polling and running timers (epoll_wait, uv__run_timers)", ("uv__io_poll", "uv__run_timers")),
    ("everything else", ("",)),
)
"""(name, patterns): a sample belongs to the first part with a pattern found in its stack."""

LEAVES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("send", re.compile(r"\b(__)?(libc_)?(send|sendto|sendmsg|write|writev)\b|tcp_sendmsg|uv__write")),
    ("receive", re.compile(r"\b(__)?(libc_)?(recv|recvfrom|recvmsg|read|readv)\b|uv__read")),
    ("wait (epoll)", re.compile(r"epoll_wait|epoll_pwait|uv__io_poll")),
)

_LINE = re.compile(r"^(.*) (\d+)$")


def parse(text: str) -> Counter[str]:
    """Collapsed stacks -> samples per stack; lines that are not `stack COUNT` are refused by number."""
    stacks: Counter[str] = Counter()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        found = _LINE.match(line)
        if found is None:
            raise ValueError(f"line {number} is not 'frame;frame;... COUNT': {line[:80]!r}")
        stacks[found.group(1)] += int(found.group(2))
    return stacks


def _is_python(frame: str) -> bool:
    return ".py:" in frame or "<frozen " in frame


def _leaf_kind(stack: str) -> str:
    """What the native frames under the deepest Python frame were doing; none: Python's own work."""
    frames = stack.split(";")
    deepest = max((i for i, frame in enumerate(frames) if _is_python(frame)), default=-1)
    joined = ";".join(frames[deepest + 1:])
    if not joined:
        return "compute"
    for name, pattern in LEAVES:
        if pattern.search(joined):
            return name
    return "compute"


def summarize(stacks: Counter[str]) -> tuple[int, dict[str, Counter[str]]]:
    """(total samples, part -> samples by leaf kind)."""
    parts: dict[str, Counter[str]] = {name: Counter() for name, _ in PARTS}
    total = 0
    for stack, count in stacks.items():
        total += count
        for name, patterns in PARTS:
            if any(p in stack for p in patterns):
                parts[name][_leaf_kind(stack)] += count
                break
    return total, parts


def _own_frames(stacks: Counter[str], top: int) -> list[tuple[str, int]]:
    """The Python functions of the bridge with the most samples at or under them (inclusive)."""
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        seen = set()
        for frame in stack.split(";"):
            if (".py:" in frame or ".py)" in frame) and frame not in seen:
                name = re.sub(r":\d+\)$", ")", frame)
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count
    return inclusive.most_common(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.stacks", description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=25, help="Python functions to list by inclusive samples")
    args = parser.parse_args(argv)
    try:
        stacks = parse(args.raw.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"stacks: {args.raw}: {exc}", file=sys.stderr)
        return 2
    total, parts = summarize(stacks)
    if not total:
        print(f"stacks: {args.raw} holds no samples", file=sys.stderr)
        return 2
    kinds = [name for name, _ in LEAVES] + ["compute"]
    print(f"{total} samples on the CPU\n")
    print("| part | share | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for name, counts in parts.items():
        share = sum(counts.values())
        if share:
            print(f"| {name} | {100 * share / total:.1f} % | "
                  + " | ".join(f"{100 * counts[k] / total:.1f} %" for k in kinds) + " |")
    print("\nPython functions by inclusive share:")
    for frame, count in _own_frames(stacks, args.top):
        print(f"{100 * count / total:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
