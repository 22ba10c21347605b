"""The physical floor beside the bridge and the baseline (issue 13's table), and refused calls counted.

Tiny runs on the real parts: the floor is compiled from the shared floor.c with the machine's `cc` (the
floor's tests skip where either is missing), the bridge and the baseline run as processes, the callers
speak AudioSocket over loopback TCP. They check the report's shape and that what it counts happened; no
timing goals (those are the benchmark's to measure, not the tests' to assert).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.protocol import AUDIO_HEADER_320
from bridge.sim.bench.floor import FloorError, build_floor, default_floor_source
from bridge.sim.bench.load import run_bench, was_refused
from bridge.sim.caller import place_call

SOURCE = default_floor_source()
needs_floor = pytest.mark.skipif(SOURCE is None or shutil.which("cc") is None,
                                 reason="the floor needs ../shared/bench/floor.c and a C compiler")


@needs_floor
def test_floor_is_built_once_per_source(tmp_path: Path) -> None:
    assert SOURCE is not None
    binary = build_floor(SOURCE, cache_dir=tmp_path)
    assert binary.parent == tmp_path and binary.stat().st_mode & 0o111
    built_at = binary.stat().st_mtime_ns
    assert build_floor(SOURCE, cache_dir=tmp_path) == binary
    assert binary.stat().st_mtime_ns == built_at  # cached, not rebuilt
    edited = tmp_path / "floor.c"
    edited.write_text(SOURCE.read_text() + "\n/* edited */\n")
    assert build_floor(edited, cache_dir=tmp_path) != binary  # another source, another binary


def test_floor_build_errors_name_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.c"
    with pytest.raises(FloorError, match=r"nowhere\.c"):
        build_floor(missing, cache_dir=tmp_path)
    if shutil.which("cc") is not None:
        broken = tmp_path / "broken.c"
        broken.write_text("int main( { return 0; }\n")
        with pytest.raises(FloorError, match=r"cc -O2 .*broken\.c failed"):
            build_floor(broken, cache_dir=tmp_path)
    fine = tmp_path / "fine.c"
    fine.write_text("int main(void) { return 0; }\n")
    with pytest.raises(FloorError, match="no-such-compiler"):
        build_floor(fine, cache_dir=tmp_path, compiler="no-such-compiler")


@needs_floor
@pytest.mark.asyncio
async def test_floor_run_paces_the_same_callers_and_reports_its_cost() -> None:
    result = await run_bench(3, 2.5, scenario="tone", ramp_s=0.2, server="floor")
    assert result.server == "floor"
    assert (result.completed, result.failed, result.refused) == (3, 0, 0), result.errors
    assert result.first_audio_ms_p99 is not None  # its tone is audio, not silence
    assert 0.9 < result.realtime_ratio_min <= result.realtime_ratio_max < 1.1
    assert result.realtime_ratio_p1 is not None and result.realtime_ratio_p99 is not None
    assert result.server_cpu_ms_per_call_s is not None
    assert result.clock_lateness_ms_p99 is None and result.clock_window is None  # no media clock to report
    rows = dict(result.rows())
    assert not any(label.startswith("clock") for label in rows) and rows["refused (closed before audio)"] == "0"


@needs_floor
def test_bench_cli_runs_the_floor_beside_the_bridge() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "--scenario", "tone", "--calls", "2", "--duration", "2.2",
         "--ramp", "0.1", "--floor", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert [r["server"] for r in results] == ["bridge", "floor"]
    assert all(r["completed"] == 2 and r["refused"] == 0 for r in results)


def test_bench_cli_names_a_missing_floor_source(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bridge", "bench", "--calls", "1", "--floor-source",
                           str(tmp_path / "missing.c")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "missing.c" in proc.stderr


def test_overhead_table_has_the_floor_the_bridge_and_the_baseline() -> None:
    floor = SOURCE is not None and shutil.which("cc") is not None
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.sim.bench.overhead", "--calls", "3", "--repeat", "1", "--duration", "2.5",
         "--ramp", "0.2", "--overload", "4", "--no-static", *([] if floor else ["--no-floor"])],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    cost, _, overload = out.partition("## Overload: 4 calls")
    assert "| calls | server | CPU of one core | CPU per call-second | x floor |" in cost
    assert "| 3 | bridge (tone) |" in cost and "| 3 | baseline (tone) |" in cost
    assert "all-static" not in cost
    assert "| 4 | bridge (tone) | 4 / 0 |" in overload  # nobody refuses four calls
    assert proc.stderr.count("load average") >= 3  # the machine's load before every run
    if floor:
        assert "| 3 | floor (C epoll, tone) |" in cost
        floor_row = next(line for line in cost.splitlines() if "floor (C epoll" in line)
        assert floor_row.split("|")[5].strip() == "1.00"  # the floor is its own yardstick
    else:
        assert "floor" not in cost.replace("x floor", "")


async def _serve(handler) -> tuple[asyncio.base_events.Server, int]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.asyncio
async def test_a_call_closed_before_audio_counts_as_refused_and_one_that_was_heard_does_not() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(19)  # the UUID message, then closed: how an overloaded bridge refuses
        writer.close()

    async def play_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(19)
        writer.write(AUDIO_HEADER_320 + b"\x10\x00" * 160)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    refusing, refusing_port = await _serve(refuse)
    playing, playing_port = await _serve(play_then_close)
    async with refusing, playing:
        refused = await place_call("127.0.0.1", refusing_port, duration_s=1.0, max_wait_s=5)
        heard = await place_call("127.0.0.1", playing_port, duration_s=1.0, max_wait_s=5)
    assert refused.frames == 0 and was_refused(refused)
    assert heard.frames == 1 and not was_refused(heard)
    with pytest.raises(ConnectionRefusedError) as closed_port:
        await place_call("127.0.0.1", refusing_port, duration_s=1.0)
    assert was_refused(closed_port.value)
    assert not was_refused(ValueError("not a connection error"))


@pytest.mark.asyncio
@pytest.mark.parametrize("variant", [("--read", "callback"), ("--read", "decode", "--write", "socket"),
                                     ("--read", "tick"), ("--read", "lowat")])
async def test_python_floors_pace_the_same_callers(variant: tuple[str, ...]) -> None:
    result = await run_bench(2, 2.5, scenario="tone", ramp_s=0.1, server="pyfloor", server_args=variant)
    assert result.server == "pyfloor " + " ".join(variant)
    assert (result.completed, result.failed, result.refused) == (2, 0, 0), result.errors
    assert result.first_audio_ms_p99 is not None  # its tone is audio
    assert 0.9 < result.realtime_ratio_min <= result.realtime_ratio_max < 1.1
    assert result.clock_window is not None and "lateness" in result.clock_window  # SIGUSR1 answered


def test_stacks_are_summed_into_the_call_paths_parts() -> None:
    from bridge.sim.bench.stacks import parse, summarize

    raw = "\n".join([
        "main (x.py:1);uv__read (stream.c:1);read (libc.so.6) 17",
        "main (x.py:1);uv__read (stream.c:1);Call.data_received (bridge/call.py:351);Decoder.feed "
        "(bridge/protocol.py:246) 7",
        "main (x.py:1);MediaClock._run (bridge/clock.py:300);MediaClock._tick (bridge/clock.py:320);"
        "Call.clock_tick (bridge/call.py:300);UVStream_write (loop.c:1);write (libc.so.6) 60",
        "main (x.py:1);MediaClock._run (bridge/clock.py:300);MediaClock._tick (bridge/clock.py:320);"
        "Call.clock_tick (bridge/call.py:302) 6",
        "main (x.py:1);uv__io_poll (linux.c:1);epoll_wait (libc.so.6) 4",
        "main (x.py:1);MediaClock._run (bridge/clock.py:290) 3",
        "main (x.py:1);something (elsewhere.c:1) 3",
    ])
    total, parts = summarize(parse(raw))
    assert total == 100
    by_name = {name.split(":")[0].split(" (")[0]: counts for name, counts in parts.items()}
    tick = next(c for n, c in parts.items() if n.startswith("outbound"))
    assert tick == {"send": 60, "compute": 6}
    inbound = next(c for n, c in parts.items() if n.startswith("inbound"))
    assert inbound == {"compute": 7}  # data_received wins over the read that led to it
    reading = next(c for n, c in parts.items() if "reading sockets" in n)
    assert reading == {"receive": 17}
    polling = next(c for n, c in parts.items() if "polling" in n)
    assert polling == {"wait (epoll)": 4}
    assert sum(sum(c.values()) for c in parts.values()) == total and by_name
    with pytest.raises(ValueError, match="line 2"):
        parse("a;b 1\nno count here\n")


def test_micro_benchmarks_time_every_operation() -> None:
    from bridge.sim.bench.micro import measure

    figures = measure(number=200)
    assert len(figures) == 10
    assert "Call.data_received of one message (no listener)" in figures
    assert all(ns > 0 for ns in figures.values())
