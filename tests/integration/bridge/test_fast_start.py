"""First words without waiting for a phase: a call joins the clock with its first frame, and speech after
silence is brought forward (`MediaClock.expedite`), never closer than half a period to the frame before it
and never so often that a call plays faster than real time.

The rule itself (which phase, how soon) is tested exactly with a fake clock in tests/unit/test_schedule.py.
The tests here assert what holds on a loaded machine (the order of events, counts); pacing measured at the
simulated caller (bursts, realtime ratio, milliseconds), which a busy machine blurs, is in
tests/perf/test_fast_start_timing.py.
"""

from __future__ import annotations

from support.fast_start import TONE, call_handler, pause_then_speak_call, speak_at_once

# --- default run -----------------------------------------------------------------------------------


async def test_the_first_frame_queued_is_the_first_frame_sent():
    """A handler that speaks as soon as it runs: the call joins the clock with that frame, no silence first.

    (On asyncio's loop the handler's first step runs before the one-period join timer, however loaded.)"""
    report, _ = await call_handler(speak_at_once(0.0), 0.6, keep_audio=True)
    assert report.error is None and report.hangup == "caller"
    assert report.silent_frames == 0
    assert report.audio[:320] == TONE
    assert report.first_audio_ms == report.first_frame_ms


async def test_a_call_with_nothing_to_say_still_gets_silence_from_the_start():
    report, _ = await call_handler(None, 0.6)
    assert report.first_frame_ms is not None and report.first_frame_ms < 2000  # generous: a smoke test
    assert report.first_audio_ms is None and report.frames >= 10


async def test_speech_after_a_pause_is_expedited_at_most_once():
    report, moves, started = await pause_then_speak_call()
    assert started and report.error is None
    assert moves <= 1  # once for the utterance, not per frame (whether it moves depends on the moment)
