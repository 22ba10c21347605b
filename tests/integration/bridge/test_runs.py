"""A list of frames plays as one run the clock reads straight from the list: same sound, same order, same
barge-in and hang-up behaviour as frame by frame, with one producer wake-up for the whole run. Every test
runs with the C tick and with the pure-Python outlet (`BRIDGE_NATIVE_TICK=false`)."""

from __future__ import annotations

import asyncio
from unittest import mock

from bridge.call import Call, CallEnded
from bridge.config import BridgeConfig
from bridge.sim.caller import CallReport, place_call
from support.calls import call_handler, serve_handler


def numbered(n: int, start: int = 1) -> list[bytes]:
    """Frames a caller can tell apart: frame k is 160 samples of value k."""
    return [(k).to_bytes(2, "little") * 160 for k in range(start, start + n)]


def heard(audio: bytes) -> list[int]:
    """The value of each non-silent frame heard, in order."""
    frames = [audio[i:i + 320] for i in range(0, len(audio) - 319, 320)]
    return [int.from_bytes(f[:2], "little") for f in frames if f.strip(b"\x00")]


async def _call(handler, seconds: float, native_tick: bool) -> CallReport:
    report, _ = await call_handler(handler, seconds, native_tick=native_tick, max_wait_s=15, keep_audio=True)
    return report


async def test_a_run_is_heard_whole_in_order_and_returns_with_at_most_a_queue_left(native_tick: bool):
    run = numbered(40)
    original = list(run)
    left_at_return: list[int] = []
    wakeups = 0

    space = Call._space

    async def counting_space(self: Call) -> None:
        nonlocal wakeups
        wakeups += 1
        await space(self)

    async def play(call: Call) -> None:
        with mock.patch.object(Call, "_space", counting_space):
            await call.play_frames(run)
        left_at_return.append(call.queued_frames)

    report = await _call(play, 1.2, native_tick)
    assert report.error is None and report.worst_burst_frames <= 2
    assert heard(report.audio) == list(range(1, 41))
    assert run == original  # read, never modified (the list is shared by every call playing it)
    assert 0 <= left_at_return[0] <= BridgeConfig().queue_frames
    assert wakeups <= 2  # once to wait for the run, not every couple of frames (20 times for 40 frames)


async def test_runs_and_single_frames_keep_their_order(native_tick: bool):
    async def play(call: Call) -> None:
        await call.play(numbered(1, start=100)[0])
        await call.play_frames(numbered(10))
        await call.play(numbered(1, start=200)[0])
        await call.play_frames(numbered(8, start=300))
        await call.play_frames(numbered(3, start=400))  # short lists go frame by frame

    report = await _call(play, 1.2, native_tick)
    assert heard(report.audio) == [100, *range(1, 11), 200, *range(300, 308), 400, 401, 402]


async def test_clear_audio_drops_the_rest_of_a_run(native_tick: bool):
    dropped: list[int] = []

    async def play(call: Call) -> None:
        playing = asyncio.ensure_future(call.play_frames(numbered(100)))
        await asyncio.sleep(0.2)
        dropped.append(call.clear_audio())
        await playing  # returns: nothing left to wait for
        assert call.queued_frames == 0

    report = await _call(play, 1.5, native_tick)
    values = heard(report.audio)
    assert values == list(range(1, len(values) + 1))  # a prefix of the run, then silence
    assert 3 <= len(values) <= 30 and dropped[0] >= 60
    assert len(values) + dropped[0] == 100


async def test_a_hang_up_during_a_run_raises_call_ended(native_tick: bool):
    inner: list[asyncio.Future[int]] = []

    async def play(call: Call) -> None:
        # a producer the call does not own (as the orchestrator's playlist task): it must not hang
        inner.append(asyncio.ensure_future(call.play_frames(numbered(200))))
        await call.hung_up.wait()

    server = await serve_handler(play, native_tick=native_tick)
    try:
        report = await place_call("127.0.0.1", server.port, duration_s=0.5, max_wait_s=15)
        await asyncio.wait_for(asyncio.wait(inner), 5)
    finally:
        await server.stop(0)
    assert report.hangup == "caller"
    assert isinstance(inner[0].exception(), CallEnded)


async def test_a_list_with_a_short_frame_is_padded_frame_by_frame(native_tick: bool):
    frames = numbered(12)
    frames[-1] = frames[-1][:100]

    async def play(call: Call) -> None:
        await call.play_frames(frames)

    report = await _call(play, 0.8, native_tick)
    values = heard(report.audio)
    assert values == list(range(1, 13))
    last = [
        report.audio[i : i + 320]
        for i in range(0, len(report.audio) - 319, 320)
        if report.audio[i : i + 320].strip(b"\x00")
    ][-1]
    assert last[:100] == frames[-1] and last[100:] == bytes(220)
