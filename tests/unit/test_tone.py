"""`serve --tone HZ`: the test tone keeps its phase across 20 ms frames (no click at 50 Hz), and a frequency
it cannot play is refused with the option named."""

from __future__ import annotations

import itertools

import pytest

from bridge.protocol import FRAME_BYTES
from bridge.server import parse_tone_hz, tone_frame, tone_frames
from support.tone import continuous_sine, samples


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


@pytest.mark.parametrize("raw, words", [
    ("0", "above 0 and below 4000 Hz"), ("4000", "below 4000 Hz"), ("-5", "above 0"), ("nan", "above 0"),
    ("410.37", "does not repeat within 5 s; give a multiple of 0.2 Hz"), ("loud", "expected a frequency in Hz"),
])
def test_parse_tone_hz_refuses_what_cannot_be_played(raw, words):
    with pytest.raises(Exception, match=words):
        parse_tone_hz(raw)


def test_parse_tone_hz_accepts_playable_frequencies():
    assert parse_tone_hz("410") == 410.0 and parse_tone_hz("1000.4") == 1000.4
