"""First words without waiting for a phase: a call joins the clock with its first frame, and speech after
silence is brought forward (`MediaClock.expedite`), never closer than half a period to the frame before it
and never so often that a call plays faster than real time.

The rule itself (which phase, how soon) is tested exactly with a fake clock in tests/unit/test_schedule.py.
The default tests here assert what holds on a loaded machine (the order of events, counts); the ones
marked `perf` measure pacing at the simulated caller (bursts, realtime ratio, milliseconds), which a busy
machine blurs, and run with `-m perf`.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from bridge.call import QUIET_FRAMES, Call
from bridge.clock import MediaClock
from bridge.config import BridgeConfig
from bridge.server import AudioSocketServer, tone_frame
from bridge.sim.caller import CallReport, place_call

TONE = tone_frame(400)


class Recorder:
    def __init__(self) -> None:
        self.times: list[float] = []

    def clock_tick(self) -> None:
        self.times.append(time.monotonic())


async def _ticks(member: Recorder, n: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(member.times) < n:
        assert time.monotonic() < deadline, f"only {len(member.times)} ticks"
        await asyncio.sleep(0.001)


async def _serve(handler) -> AudioSocketServer:
    server = AudioSocketServer(BridgeConfig(host="127.0.0.1", port=0), handler)
    await server.start()
    return server


async def _call(handler, duration_s: float, **kwargs) -> tuple[CallReport, AudioSocketServer]:
    server = await _serve(handler)
    try:
        report = await place_call("127.0.0.1", server.port, duration_s=duration_s, max_wait_s=10, **kwargs)
    finally:
        await server.stop(0)
    return report, server


def _speak_at_once(delay_s: float):
    async def speak(call: Call) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)  # e.g. a Redis read
        await call.play_frames(itertools.repeat(TONE, 10))

    return speak


async def _trickle_call(gap_s: float) -> CallReport:
    """Each frame arrives just after the queue ran dry: an underrun, not an utterance start (not expedited)."""

    async def trickle(call: Call) -> None:
        await call.play(TONE)
        while True:
            await call.drained()
            await asyncio.sleep(gap_s)
            await call.play(TONE)

    report, _ = await _call(trickle, 2.0)
    return report


async def _pause_then_speak_call() -> tuple[CallReport, int, bool]:
    """Five frames, a pause longer than QUIET_FRAMES, then speech: (report, expedite moves, speech started)."""
    speech_started = asyncio.Event()

    async def pause_then_speak(call: Call) -> None:
        await call.play_frames([TONE] * 5)
        await call.drained()
        await asyncio.sleep((QUIET_FRAMES + 3) * 0.02)
        speech_started.set()
        await call.play_frames(itertools.repeat(TONE))

    moves = 0
    server = await _serve(pause_then_speak)
    expedite = server.clock.expedite

    def counting(member) -> bool:
        nonlocal moves
        moved = expedite(member)
        moves += moved
        return moved

    server.clock.expedite = counting  # type: ignore[method-assign]
    try:
        report = await place_call("127.0.0.1", server.port, duration_s=1.5, max_wait_s=10)
    finally:
        await server.stop(0)
    return report, moves, speech_started.is_set()


# --- default run -----------------------------------------------------------------------------------


async def test_the_first_frame_queued_is_the_first_frame_sent():
    """A handler that speaks as soon as it runs: the call joins the clock with that frame, no silence first.

    (On asyncio's loop the handler's first step runs before the one-period join timer, however loaded.)"""
    report, _ = await _call(_speak_at_once(0.0), 0.6, keep_audio=True)
    assert report.error is None and report.hangup == "caller"
    assert report.silent_frames == 0
    assert report.audio[:320] == TONE
    assert report.first_audio_ms == report.first_frame_ms


async def test_a_call_with_nothing_to_say_still_gets_silence_from_the_start():
    report, _ = await _call(None, 0.6)
    assert report.first_frame_ms is not None and report.first_frame_ms < 2000  # generous: a smoke test
    assert report.first_audio_ms is None and report.frames >= 10


async def test_speech_after_a_pause_is_expedited_at_most_once():
    report, moves, started = await _pause_then_speak_call()
    assert started and report.error is None
    assert moves <= 1  # once for the utterance, not per frame (whether it moves depends on the moment)


# --- perf: pacing measured at the caller ------------------------------------------------------------


@pytest.mark.perf
async def test_expedite_moves_a_member_ahead_of_its_old_phase_but_not_closer_than_half_a_period():
    clock = MediaClock()
    fast, slow = Recorder(), Recorder()
    clock.add(fast)
    clock.add(slow)  # the same phase as `fast` (one call per phase is the average)
    try:
        await _ticks(slow, 3)
        assert clock.schedule.phase_of(fast) == clock.schedule.phase_of(slow)
        n = len(fast.times)
        assert clock.expedite(fast) is True
        assert clock.schedule.phase_of(fast) != clock.schedule.phase_of(slow)
        await _ticks(slow, len(slow.times) + 2)
    finally:
        await clock.stop()
    # the expedited member's next frame comes before its old phase-mate's, and not within 10 ms of its last
    assert fast.times[n] < slow.times[n]
    assert fast.times[n] - fast.times[n - 1] >= 0.0098
    gaps = [b - a for a, b in itertools.pairwise(fast.times)]
    assert min(gaps) >= 0.0098


@pytest.mark.perf
async def test_a_first_frame_queued_after_a_redis_read_is_still_the_first_frame_sent():
    report, _ = await _call(_speak_at_once(0.005), 0.6, keep_audio=True)
    assert report.error is None and report.silent_frames == 0
    assert report.audio[:320] == TONE
    assert report.first_audio_ms == report.first_frame_ms
    assert report.worst_burst_frames <= 2


@pytest.mark.perf
async def test_silence_starts_within_a_period():
    report, _ = await _call(None, 0.6)
    assert report.first_frame_ms is not None and report.first_frame_ms < 20 + 80  # one period, some slack
    assert report.frames >= 20


@pytest.mark.perf
@pytest.mark.parametrize("gap_s", [0.012, 0.025])
async def test_a_source_that_trickles_frame_by_frame_never_plays_faster_than_real_time(gap_s):
    report = await _trickle_call(gap_s)
    assert report.error is None
    assert report.realtime_ratio is not None and report.realtime_ratio < 1.05  # expediting each frame: ~1.3+
    assert report.worst_burst_frames <= 2


@pytest.mark.perf
async def test_speech_after_a_pause_is_expedited_and_pacing_holds():
    report, moves, started = await _pause_then_speak_call()
    assert started and report.error is None
    assert moves <= 1
    assert report.worst_burst_frames <= 2
    assert report.realtime_ratio is not None and 0.95 < report.realtime_ratio < 1.05
