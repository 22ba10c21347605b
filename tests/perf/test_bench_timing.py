"""`voice-bridge bench` in-process at a small size holds real time (marker `perf`: a loaded machine slows the
callers). That bench runs end to end and reports what happened is tested by default in
tests/integration/bench/test_bench_scenarios.py."""

from __future__ import annotations

from bridge.sim.bench.load import run_bench


async def test_bench_runs_end_to_end_at_small_size():
    result = await run_bench(5, 2.5, scenario="tone", ramp_s=0.2)
    assert result.completed == 5 and result.failed == 0, result.errors
    assert result.realtime_ratio_min > 0.9 and result.first_audio_ms_p50 is not None
    assert result.clock_lateness_ms_p99 is not None and result.server_cpu_percent is not None
    assert result.clock_window and result.clock_window["calls"] == 5
    assert "realtime ratio" in result.table()
