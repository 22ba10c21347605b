"""`voice-bridge serve` as a real process: listening log line, SIGUSR1 stats, SIGTERM with grace, refusals."""

from __future__ import annotations

import asyncio
import signal
import time

from bridge.sim.caller import place_call
from support.process import ServeProcess, run_serve


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
        assert await serve.exited(10) == 0  # the one SIGTERM ends it, after the grace period
    assert report.hangup == "server" and report.received_hangup  # 00 00 00 after the grace period
    assert 0.4 <= waited < 5, waited
    assert report.first_audio_ms is not None and report.frames >= 20
    started = next(line for line in serve.lines if line["event"] == "call_started")
    assert started["call"] == report.uuid and started["peer"].startswith("127.0.0.1:")
    assert all(line.get("call") == report.uuid
               for line in serve.lines if line["event"] in ("call_started", "call_ended"))
    stopped = next(line for line in serve.lines if line["event"] == "stopped")
    assert stopped["hung_up"] == 1 and stopped["calls_total"] == 1


async def test_serve_refuses_a_bad_setting():
    status, err = await run_serve("--bridge-port", "99999")
    assert status == 2 and "BRIDGE_PORT" in err


async def test_serve_reports_a_port_in_use():
    async with ServeProcess("--silence") as first:
        status, err = await run_serve("--bridge-port", str(first.port), "--log-format", "json")
        assert status == 2 and f"BRIDGE_PORT={first.port}: port {first.port} is in use" in err
