"""`voice-bridge serve` as a real process: listening log line, SIGUSR1 stats, SIGTERM with grace; `bench`."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from bridge.sim.bench.load import run_bench
from bridge.sim.caller import place_call


class ServeProcess:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.lines: list[dict] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def __aenter__(self) -> ServeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--bridge-port", "0", "--log-format", "json", *self.args,
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        self.reader = asyncio.create_task(self._read())
        line = await self.wait_for("listening", 30)
        self.port = line["port"]
        return self

    async def _read(self) -> None:
        async for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "non-json", "text": raw.decode(errors="replace")})

    async def wait_for(self, event: str, timeout_s: float = 10) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            if self.proc.returncode is not None and self.reader.done():
                break
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {event!r} log line; got {[line.get('event') for line in self.lines]}")

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_serve_signals_and_graceful_shutdown():
    async with ServeProcess("--bridge-shutdown-grace", "0.5", "--tone", "400") as serve:
        call = asyncio.create_task(place_call("127.0.0.1", serve.port, duration_s=None, max_wait_s=20))
        await serve.wait_for("call_started")
        await asyncio.sleep(0.3)
        serve.proc.send_signal(signal.SIGUSR1)
        stats = await serve.wait_for("clock_stats")
        assert stats["clock"]["ticks"] > 0 and "p99_ms" in stats["clock"]["lateness"]
        t = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        report = await call
        waited = time.monotonic() - t
        assert await asyncio.wait_for(serve.proc.wait(), 10) == 0
        await serve.reader
    assert report.hangup == "server" and report.received_hangup  # 00 00 00 after the grace period
    assert 0.4 <= waited < 5, waited
    assert report.first_audio_ms is not None and report.frames >= 20
    started = next(line for line in serve.lines if line["event"] == "call_started")
    assert started["call"] == report.uuid and started["peer"].startswith("127.0.0.1:")
    assert all(
        line.get("call") == report.uuid for line in serve.lines if line["event"] in ("call_started", "call_ended")
    )
    stopped = next(line for line in serve.lines if line["event"] == "stopped")
    assert stopped["hung_up"] == 1 and stopped["calls_total"] == 1


async def test_serve_refuses_a_bad_setting():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--bridge-port", "99999",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"BRIDGE_PORT" in err


async def test_serve_reports_a_port_in_use():
    async with ServeProcess("--silence") as first:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--bridge-port", str(first.port), "--log-format", "json",
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2 and f"BRIDGE_PORT={first.port}: port {first.port} is in use".encode() in err


async def test_bench_runs_end_to_end_at_small_size():
    result = await run_bench(5, 2.5, scenario="tone", ramp_s=0.2)
    assert result.completed == 5 and result.failed == 0, result.errors
    assert result.realtime_ratio_min > 0.9 and result.first_audio_ms_p50 is not None
    assert result.clock_lateness_ms_p99 is not None and result.server_cpu_percent is not None
    assert result.clock_window and result.clock_window["calls"] == 5
    assert "realtime ratio" in result.table()
