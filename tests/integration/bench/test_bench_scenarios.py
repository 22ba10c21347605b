"""`voice-bridge bench` scenarios at a tiny size, on the real parts (a private Redis, the emulator and the
bridge as separate processes): they run, and what they report is what happened. No timing assertions
beyond the physically necessary (nobody hears a synthesis before the emulator's first byte)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio

from bridge.sim.bench.load import (
    MIXED_UNIQUE_SHARE,
    SCENARIOS,
    STATIC_PLAYLIST,
    BenchStack,
    comparison_table,
    run_bench,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def on_the_stack(test: Callable[..., Any]) -> Callable[..., Any]:
    """The tests on the module's one BenchStack run on one xdist worker (tests/run.sh uses --dist
    loadgroup), and early: about 28 s in all."""
    return pytest.mark.slow(pytest.mark.xdist_group("bench_stack")(test))


CALLS = 4
TTFB_MS = 60.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack():
    async with BenchStack(ttfb_ms=TTFB_MS) as s:
        yield s


@on_the_stack
async def test_all_static_plays_cached_fragments_only(stack):
    result = await run_bench(CALLS, 2.5, scenario="all-static", ramp_s=0.2, stack=stack)
    assert (result.completed, result.failed) == (CALLS, 0), result.errors
    assert result.errors == []
    assert result.first_audio_ms_p50 is not None  # every call heard a fragment, not only silence
    assert result.cache is not None and result.cache["source"] == "bridge metrics"
    assert result.cache.get("static_hits", 0) >= CALLS and result.cache.get("static_misses", 0) == 0
    assert result.cache_hit_ratio == 1.0
    assert result.emulator is not None and result.emulator["http_requests"] == 0  # nothing synthesized
    assert result.realtime_ratio_min > 0.9 and result.realtime_ratio_max < 1.1
    assert result.server_rss_kb_per_call is not None and result.clock_lateness_ms_p99 is not None
    # measured (a timer never fires early, so a 2.5 s run of four callers shows some lag) and reported
    assert result.callers_loop_lag_max_ms is not None and result.callers_loop_lag_max_ms > 0
    lag = ("callers event loop worst lag", f"{result.callers_loop_lag_max_ms:.1f} ms")
    assert lag in result.rows() and f"{lag[0]}  " in result.table()


@on_the_stack
async def test_all_miss_synthesizes_one_new_text_per_call(stack):
    result = await run_bench(CALLS, 2.5, scenario="all-miss", ramp_s=0.2, stack=stack)
    assert (result.completed, result.failed) == (CALLS, 0), result.errors
    assert result.emulator is not None
    assert result.emulator["http_requests"] == CALLS  # one request per call: every text was new
    assert result.emulator["ttfb_knob_ms"] == TTFB_MS and result.emulator["ttfb_ms_p50"] >= TTFB_MS
    assert result.cache is not None and result.cache.get("tts_misses") == CALLS and not result.cache.get("tts_hits")
    assert result.cache_hit_ratio == 0.0
    # a caller cannot hear a synthesis before the emulator sent its first byte
    assert result.first_audio_ms_p50 is not None and result.first_audio_ms_p50 >= TTFB_MS
    split = result.first_audio_split_ms
    assert split is not None and split["emulator_ttfb"]["n"] == CALLS
    assert split["emulator_ttfb"]["p50_ms"] >= TTFB_MS and split["after_first_byte"]["p50_ms"] > 0


@on_the_stack
async def test_mixed_hits_fragments_and_some_syntheses(stack):
    calls = 10  # long enough for the playlist to reach its last fragment (looked up while the one before plays)
    result = await run_bench(calls, 4.5, scenario="mixed", ramp_s=0.3, stack=stack)
    assert (result.completed, result.failed) == (calls, 0), result.errors
    assert result.cache is not None
    assert result.cache.get("static_hits", 0) == 4 * calls  # four fragments a call, all cached
    assert result.cache.get("tts_hits", 0) + result.cache.get("tts_misses", 0) == calls
    assert 0.0 < result.cache_hit_ratio < 1.0
    assert result.emulator is not None and 1 <= result.emulator["http_requests"] <= calls
    assert 0 < MIXED_UNIQUE_SHARE < 1


@on_the_stack
async def test_baseline_runs_the_same_scenario_and_reports_its_drift(stack):
    result = await run_bench(CALLS, 2.5, scenario="all-static", ramp_s=0.2, server="baseline", stack=stack)
    assert result.server == "baseline"
    assert (result.completed, result.failed) == (CALLS, 0), result.errors
    assert result.first_audio_ms_p50 is not None  # it played the fragments from the same Redis
    assert result.clock_window is not None and "sleep_overshoot" in result.clock_window
    assert result.clock_lateness_ms_p99 is None  # no media clock to report
    table = comparison_table([result, result])
    assert "sleep(0.02) overshoot" in table and table.count("baseline") >= 2


async def test_scenarios_without_a_baseline_refuse_one():
    with pytest.raises(ValueError, match="no baseline"):
        await run_bench(1, 2.5, scenario="all-miss", ramp_s=0.2, server="baseline")
    assert SCENARIOS["all-static"].baseline_args is not None and len(STATIC_PLAYLIST) == 5


@pytest.mark.slow
async def test_bench_cli_prints_json_for_each_size():
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "--scenario", "tone", "--calls", "2,3", "--duration", "2.2",
         "--ramp", "0.1", "--baseline", "--json"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert [(r["server"], r["calls"]) for r in results] == [
        ("bridge", 2),
        ("baseline", 2),
        ("bridge", 3),
        ("baseline", 3),
    ]
    assert all(r["completed"] == r["calls"] for r in results)


async def test_bench_cli_refuses_bad_arguments():
    bad_calls = subprocess.run([sys.executable, "-m", "bridge", "bench", "--calls", "0"],
                               capture_output=True, text=True, timeout=60)
    assert bad_calls.returncode == 2 and "--calls" in bad_calls.stderr
    no_baseline = subprocess.run([sys.executable, "-m", "bridge", "bench", "--scenario", "all-miss", "--baseline"],
                                 capture_output=True, text=True, timeout=60)
    assert no_baseline.returncode == 2 and "no baseline" in no_baseline.stderr
