"""First words without waiting for a phase, measured: the expedited member's spacing on a real clock and
pacing at the simulated caller (bursts, realtime ratio, milliseconds). Marker `perf` (`-m perf`): a busy
machine blurs these. What holds on any machine is in tests/integration/bridge/test_fast_start.py."""

from __future__ import annotations

import itertools

import pytest

from bridge.clock import MediaClock
from support.clock import Recorder, until
from support.fast_start import TONE, call_handler, pause_then_speak_call, speak_at_once, trickle_call


@pytest.mark.perf
async def test_expedite_moves_a_member_ahead_of_its_old_phase_but_not_closer_than_half_a_period():
    clock = MediaClock()
    fast, slow = Recorder(), Recorder()
    clock.add(fast)
    clock.add(slow)  # the same phase as `fast` (one call per phase is the average)
    try:
        await until(lambda: len(slow.times) >= 3, 5.0)
        assert clock.schedule.phase_of(fast) == clock.schedule.phase_of(slow)
        n = len(fast.times)
        assert clock.expedite(fast) is True
        assert clock.schedule.phase_of(fast) != clock.schedule.phase_of(slow)
        await until(lambda: len(slow.times) >= n + 2, 5.0)
    finally:
        await clock.stop()
    # the expedited member's next frame comes before its old phase-mate's, and not within 10 ms of its last
    assert fast.times[n] < slow.times[n]
    assert fast.times[n] - fast.times[n - 1] >= 0.0098
    gaps = [b - a for a, b in itertools.pairwise(fast.times)]
    assert min(gaps) >= 0.0098


@pytest.mark.perf
async def test_a_first_frame_queued_after_a_redis_read_is_still_the_first_frame_sent():
    report, _ = await call_handler(speak_at_once(0.005), 0.6, keep_audio=True)
    assert report.error is None and report.silent_frames == 0
    assert report.audio[:320] == TONE
    assert report.first_audio_ms == report.first_frame_ms
    assert report.worst_burst_frames <= 2


@pytest.mark.perf
async def test_silence_starts_within_a_period():
    report, _ = await call_handler(None, 0.6)
    assert report.first_frame_ms is not None and report.first_frame_ms < 20 + 80  # one period, some slack
    assert report.frames >= 20


@pytest.mark.perf
@pytest.mark.parametrize("gap_s", [0.012, 0.025])
async def test_a_source_that_trickles_frame_by_frame_never_plays_faster_than_real_time(gap_s):
    report = await trickle_call(gap_s)
    assert report.error is None
    assert report.realtime_ratio is not None and report.realtime_ratio < 1.05  # expediting each frame: ~1.3+
    assert report.worst_burst_frames <= 2


@pytest.mark.perf
async def test_speech_after_a_pause_is_expedited_and_pacing_holds():
    report, moves, started = await pause_then_speak_call()
    assert started and report.error is None
    assert moves <= 1
    assert report.worst_burst_frames <= 2
    assert report.realtime_ratio is not None and 0.95 < report.realtime_ratio < 1.05
