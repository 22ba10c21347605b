"""`serve --tone HZ`: the test tone keeps its phase across 20 ms frames (no click at 50 Hz), and a frequency
it cannot play is refused with the option named."""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
from array import array

import pytest

from bridge.protocol import FRAME_BYTES, SAMPLE_RATE
from bridge.server import parse_tone_hz, tone_frame, tone_frames, tone_handler
from bridge.sim.caller import place_call


def samples(pcm: bytes) -> list[int]:
    values = array("h")
    values.frombytes(pcm)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return list(values)


def continuous_sine(frequency_hz: float, count: int, amplitude: int = 8000) -> list[int]:
    step = 2 * math.pi * frequency_hz / SAMPLE_RATE
    return [round(amplitude * math.sin(step * i)) for i in range(count)]


@pytest.mark.parametrize("frequency, cycle", [(400, 1), (410, 5), (1001, 50), (410.2, 250)])
def test_a_tone_cycle_repeats_as_one_continuous_sine(frequency, cycle):
    frames = tone_frames(frequency)
    assert len(frames) == cycle and all(len(f) == FRAME_BYTES for f in frames)
    played = samples(b"".join(frames * 2))  # the cycle twice, as the handler repeats it
    assert played == continuous_sine(frequency, len(played))


def test_repeating_one_frame_of_410_hz_would_click_and_the_cycle_does_not():
    """What the old generator did: one 20 ms frame repeated restarts the sine at every frame boundary."""
    one = samples(tone_frame(410) * 2)
    cycle = samples(b"".join(tone_frames(410)))
    per_frame = FRAME_BYTES // 2
    smooth = max(abs(b - a) for a, b in itertools.pairwise(cycle))  # the largest step of a 410 Hz sine
    assert abs(one[per_frame] - one[per_frame - 1]) > 2 * smooth  # the click
    assert all(abs(cycle[k * per_frame] - cycle[k * per_frame - 1]) <= smooth for k in range(1, 5))
    assert tone_frame(400) == tone_frames(400)[0]


async def test_the_server_plays_the_whole_cycle_in_order(start_server):
    server = await start_server(tone_handler(410))
    report = await place_call("127.0.0.1", server.port, duration_s=0.6, keep_audio=True)
    silence = bytes(FRAME_BYTES)
    frames = [report.audio[k:k + FRAME_BYTES] for k in range(0, len(report.audio), FRAME_BYTES)]
    heard = b"".join(f for f in frames if f != silence)  # the clock's silence before the handler starts
    assert len(heard) >= 10 * FRAME_BYTES
    assert samples(heard) == continuous_sine(410, len(heard) // 2)


@pytest.mark.parametrize("raw, words", [
    ("0", "above 0 and below 4000 Hz"), ("4000", "below 4000 Hz"), ("-5", "above 0"), ("nan", "above 0"),
    ("410.37", "does not repeat within 5 s; give a multiple of 0.2 Hz"), ("loud", "expected a frequency in Hz"),
])
def test_parse_tone_hz_refuses_what_cannot_be_played(raw, words):
    with pytest.raises(Exception, match=words):
        parse_tone_hz(raw)


def test_parse_tone_hz_accepts_playable_frequencies():
    assert parse_tone_hz("410") == 410.0 and parse_tone_hz("1000.4") == 1000.4


async def test_serve_names_the_option_a_bad_tone_was_given_to():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--bridge-port", "0", "--tone", "410.37",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "argument --tone: a 410.37 Hz tone does not repeat within 5 s" in err.decode()
