"""VAD and endpointer on synthetic audio: speech starts and ends, noise and blips never barge in."""

from __future__ import annotations

import audioop
import math
import random
from array import array

import pytest

from voice.audio import to_frames
from voice.emulators.tone_code import synthesize_pcm
from voice.stt.endpointer import (
    BargeIn,
    Endpointer,
    EndpointerConfig,
    SpeechStart,
    UtteranceEnd,
)
from voice.stt.vad import VoiceActivityDetector

SILENCE = b"\x00" * 320


def noise(frames: int, level: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [array("h", [rng.randint(-level, level) for _ in range(160)]).tobytes() for _ in range(frames)]


def vowel(frames: int, f0: float = 140.0, amp: int = 6000) -> list[bytes]:
    """A voiced, speech-like sound: a glottal pulse train's harmonics with formant-like weights."""
    out = []
    n = 0
    for _ in range(frames):
        samples = array("h")
        for _ in range(160):
            t = n / 8000
            v = sum(math.sin(2 * math.pi * f0 * h * t) / h * (2.0 if 4 <= h <= 6 else 1.0) for h in range(1, 20))
            samples.append(int(max(-32767, min(32767, amp * v / 3))))
            n += 1
        out.append(samples.tobytes())
    return out


def run(frames: list[bytes], config: EndpointerConfig | None = None, fmt: str = "pcm_8000"):
    vad = VoiceActivityDetector(fmt)
    ep = Endpointer(config)
    events = []
    for frame in frames:
        events += ep.update(vad.is_speech(frame))
    return events


def kinds(events):
    return [type(e).__name__ for e in events]


def test_endpointer_start_barge_in_and_end_by_frame_count():
    ep = Endpointer(EndpointerConfig(start_frames=3, start_window=4, barge_in_frames=5, end_silence_frames=4))
    script = [False, True, True, True, True, True, False, False, False, False]
    events = [(i, e) for i, v in enumerate(script) for e in ep.update(v)]
    assert events == [(3, SpeechStart(3, 1)), (5, BargeIn(5)),
                      (9, UtteranceEnd(9, "silence", onset=1, last_voiced=5, voiced_frames=5))]


def test_a_cough_starts_an_utterance_but_never_barges_in():
    ep = Endpointer(EndpointerConfig.from_ms(start_ms=80, barge_in_ms=240, end_silence_ms=600))
    events = [e for v in [True] * 8 + [False] * 40 for e in ep.update(v)]  # 160 ms: a cough
    assert kinds(events) == ["SpeechStart", "UtteranceEnd"]
    assert events[-1].reason == "silence"


def test_a_click_ends_as_a_blip_not_worth_transcribing():
    ep = Endpointer(EndpointerConfig.from_ms(start_ms=80, min_utterance_ms=100))
    events = [e for v in [True] * 4 + [False] * 40 for e in ep.update(v)]  # 80 ms
    assert kinds(events) == ["SpeechStart", "UtteranceEnd"]
    assert events[-1].reason == "blip"


def test_max_length_cuts_a_long_utterance():
    ep = Endpointer(EndpointerConfig.from_ms(max_utterance_s=1.0))
    events = [e for _ in range(120) for e in ep.update(True)]
    ends = [e for e in events if isinstance(e, UtteranceEnd)]
    assert ends and ends[0].reason == "max_length" and ends[0].frame - ends[0].onset + 1 == 50


def test_configured_silence_sets_the_end():
    for ms in (300, 600, 1000):
        ep = Endpointer(EndpointerConfig.from_ms(end_silence_ms=ms))
        events = [(i, e) for i, v in enumerate([True] * 20 + [False] * 100) for e in ep.update(v)]
        (i, _end), = [(i, e) for i, e in events if isinstance(e, UtteranceEnd)]
        assert i - 19 == ms // 20


def test_vad_hears_tone_coded_speech_as_one_utterance_with_barge_in():
    frames = [SILENCE] * 10 + to_frames(synthesize_pcm("да, конечно", 8000)) + [SILENCE] * 40
    events = run(frames)
    assert kinds(events) == ["SpeechStart", "BargeIn", "UtteranceEnd"]
    assert events[-1].reason == "silence"


def test_vad_hears_a_voiced_sound():
    events = run([SILENCE] * 5 + vowel(40) + [SILENCE] * 40)
    assert kinds(events) == ["SpeechStart", "BargeIn", "UtteranceEnd"]


@pytest.mark.parametrize("level", [100, 300, 600])
def test_line_noise_never_barges_in(level):
    events = run(noise(500, level))  # 10 s of hiss up to about -40 dBFS
    assert not [e for e in events if isinstance(e, BargeIn)]


def test_a_loud_blip_does_not_barge_in():
    events = run([SILENCE] * 10 + vowel(6, amp=12000) + [SILENCE] * 60)  # 120 ms
    assert "BargeIn" not in kinds(events)


def test_speech_over_a_steady_background_is_still_heard():
    background = noise(300, 150, seed=3)
    speech = vowel(40)
    mixed = (
        background[:150]
        + [audioop.add(b, s, 2) for b, s in zip(background[150:190], speech, strict=True)]
        + background[190:]
    )
    assert "BargeIn" in kinds(run(mixed))


def test_mu_law_and_16k_frames_are_heard_too():
    pcm = synthesize_pcm("да, конечно", 8000)
    ulaw = audioop.lin2ulaw(b"\x00" * 3200 + pcm + b"\x00" * 16000, 2)
    frames = [ulaw[i:i + 160] for i in range(0, len(ulaw) - 159, 160)]
    assert kinds(run(frames, fmt="ulaw_8000")) == ["SpeechStart", "BargeIn", "UtteranceEnd"]
    pcm16 = synthesize_pcm("да, конечно", 16000)
    raw = b"\x00" * 6400 + pcm16 + b"\x00" * 32000
    frames16 = [raw[i:i + 640] for i in range(0, len(raw) - 639, 640)]
    assert kinds(run(frames16, fmt="pcm_16000")) == ["SpeechStart", "BargeIn", "UtteranceEnd"]


def test_wrong_frame_size_and_format_are_named():
    with pytest.raises(ValueError, match="320 bytes, got 100"):
        VoiceActivityDetector("pcm_8000").is_speech(b"\x00" * 100)
    with pytest.raises(ValueError, match="alaw_8000"):
        VoiceActivityDetector("alaw_8000")


def test_a_short_answer_is_an_utterance_without_barge_in():
    events = run([SILENCE] * 10 + to_frames(synthesize_pcm("да", 8000)) + [SILENCE] * 40)
    assert kinds(events) == ["SpeechStart", "UtteranceEnd"]
    assert events[-1].reason == "silence"


def test_a_long_tone_coded_phrase_is_one_utterance():
    text = "позовите, пожалуйста, оператора, мне нужна помощь с оплатой счёта за прошлый месяц"
    events = run([SILENCE] * 10 + to_frames(synthesize_pcm(text, 8000)) + [SILENCE] * 40)
    assert kinds(events) == ["SpeechStart", "BargeIn", "UtteranceEnd"]


def test_a_loud_steady_background_stops_counting():
    events = run(noise(1500, 4000, seed=5))  # 30 s of loud hiss: at most one early utterance, then nothing
    starts = [e for e in events if isinstance(e, SpeechStart)]
    assert len(starts) <= 1
    assert all(e.frame < 600 for e in events)
