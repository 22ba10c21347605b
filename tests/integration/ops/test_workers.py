"""`voice-bridge serve --workers N` as real processes: one port, calls spread over the workers, signals
passed on, a dead worker replaced, a clean stop; and `bench --workers`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bridge.ops.workers import reserve_port
from bridge.sim.bench.load import run_bench
from bridge.sim.caller import place_call
from support.process import ServeProcess, clean_env, run_serve


def Workers(*args: str) -> ServeProcess:
    """`python -m bridge serve --bridge-port 0 --log-format json ARGS`: with `--workers N` each worker logs
    its own `listening` line, so entering does not wait for one."""
    return ServeProcess("--bridge-port", "0", "--log-format", "json", *args, wait_listening=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


async def test_workers_share_one_port_and_both_take_calls():
    async with Workers("--workers", "2", "--tone", "400", "--bridge-shutdown-grace", "0.5") as serve:
        listening = await serve.wait_for_all("listening", 2)
        ports = {line["port"] for line in listening}
        pids = {line["pid"] for line in listening}
        assert len(ports) == 1 and len(pids) == 2
        assert all(_parent_of(pid) == serve.proc.pid for pid in pids)  # forked by the supervisor
        port = ports.pop()
        reports = await asyncio.gather(*(place_call("127.0.0.1", port, duration_s=0.6, max_wait_s=15)
                                         for _ in range(16)))
        assert all(r.hangup == "caller" and r.error is None and r.first_audio_ms is not None for r in reports)
        started = await serve.wait_for_all("call_started", 16)
        assert {line["worker"] for line in started} == {0, 1}  # the kernel spread them (1 in 32768 to fail)

        serve.proc.send_signal(signal.SIGUSR1)  # passed on: each worker logs its own clock
        stats = await serve.wait_for_all("clock_stats", 2)
        assert {line["pid"] for line in stats} == pids

        assert await serve.stop() == 0
        assert not any(_alive(pid) for pid in pids)
        assert serve.events("workers_stopped")


async def test_a_worker_that_dies_is_replaced_and_calls_go_on():
    async with Workers("--workers", "2", "--silence", "--bridge-shutdown-grace", "0") as serve:
        listening = await serve.wait_for_all("listening", 2)
        port = listening[0]["port"]
        victim = listening[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        died = await serve.wait_for_all("worker_died")
        assert died[0]["pid"] == victim and died[0]["exit_code"] == -signal.SIGKILL
        relisten = await serve.wait_for_all("listening", 3)
        assert relisten[-1]["pid"] != victim and relisten[-1]["port"] == port
        reports = await asyncio.gather(*(place_call("127.0.0.1", port, duration_s=0.4, max_wait_s=15)
                                         for _ in range(6)))
        assert all(r.hangup == "caller" and r.error is None for r in reports)
        assert await serve.stop() == 0


async def test_one_stop_signal_to_every_process_keeps_the_grace_period():
    """systemd (cgroup) and a terminal signal every process; with the supervisor's copy, a worker gets two."""
    grace = 1.5
    async with Workers("--workers", "2", "--silence", "--bridge-shutdown-grace", str(grace)) as serve:
        listening = await serve.wait_for_all("listening", 2)
        call = asyncio.create_task(place_call("127.0.0.1", listening[0]["port"], duration_s=None, max_wait_s=20))
        await serve.wait_for("call_started")
        stopped_at = time.monotonic()
        for pid in [*(line["pid"] for line in listening), serve.proc.pid]:
            # the workers first: signalled after the supervisor, the idle one may already have stopped on
            # the supervisor's copy (ProcessLookupError)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        report = await call
        assert report.hangup == "server"  # 00 00 00 at the end of the grace period...
        assert time.monotonic() - stopped_at >= grace * 0.8  # ...not at once, as a second request would
        assert await serve.stop() == 0


async def test_a_port_held_without_reuseport_is_refused():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", port).close()
        status, err = await run_serve("--workers", "2", "--silence", "--bridge-port", str(port))
        assert status == 2 and f"BRIDGE_PORT={port}: port {port} is in use" in err


async def test_bench_drives_several_workers():
    result = await run_bench(4, 2.1, scenario="tone", ramp_s=0.1, workers=2)  # the shortest run bench allows
    assert result.workers == 2 and (result.completed, result.failed) == (4, 0), result.errors
    assert result.clock_window is not None and len(result.clock_window["workers"]) == 2
    assert result.server_cpu_percent is not None and result.server_rss_kb_per_call is not None


def test_stop_signals_repeated_while_the_workers_wind_down_do_not_kill_the_supervisor():
    """An operator (or systemd) repeating SIGTERM until the process is gone must still see exit status 0.

    A plain Popen, waited for with waitpid: asyncio's child watcher, under a signal every 2 ms, sometimes
    lost this process's exit status and reported 255 (its "unknown child" value), whatever the process did."""
    env = clean_env(BRIDGE_PORT="0", LOG_FORMAT="json")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--workers", "2", "--silence",
                             "--bridge-shutdown-grace", "0"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        listening = 0
        deadline = time.monotonic() + 30
        while listening < 2 and time.monotonic() < deadline:  # each worker logs its own `listening` line
            line = proc.stderr.readline()
            assert line, "serve ended before its workers listened"
            listening += b'"event": "listening"' in line
        assert listening == 2
        while proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
