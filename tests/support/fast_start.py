"""Calls on a real AudioSocket server with a handler that speaks at once, after a pause, or frame by frame:
shared by the first-frame tests (tests/integration/bridge/test_fast_start.py) and their timing twins
(tests/perf/test_fast_start_timing.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from bridge.call import QUIET_FRAMES, Call
from bridge.server import tone_frame
from bridge.sim.caller import CallReport, place_call
from support.calls import call_handler, serve_handler

TONE = tone_frame(400)


def speak_at_once(delay_s: float) -> Callable[[Call], Awaitable[None]]:
    """A handler that plays ten tone frames as soon as it runs (after `delay_s`, e.g. a Redis read)."""
    async def speak(call: Call) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)  # e.g. a Redis read
        await call.play_frames(itertools.repeat(TONE, 10))

    return speak


async def trickle_call(gap_s: float) -> CallReport:
    """Each frame arrives just after the queue ran dry: an underrun, not an utterance start (not expedited)."""

    async def trickle(call: Call) -> None:
        await call.play(TONE)
        while True:
            await call.drained()
            await asyncio.sleep(gap_s)
            await call.play(TONE)

    report, _ = await call_handler(trickle, 2.0)
    return report


async def pause_then_speak_call() -> tuple[CallReport, int, bool]:
    """Five frames, a pause longer than QUIET_FRAMES, then speech: (report, expedite moves, speech started)."""
    speech_started = asyncio.Event()

    async def pause_then_speak(call: Call) -> None:
        await call.play_frames([TONE] * 5)
        await call.drained()
        await asyncio.sleep((QUIET_FRAMES + 3) * 0.02)
        speech_started.set()
        await call.play_frames(itertools.repeat(TONE))

    moves = 0
    server = await serve_handler(pause_then_speak)
    expedite = server.clock.expedite

    def counting(member: Call) -> bool:
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
