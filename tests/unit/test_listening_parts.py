"""The listening parts without a call: the turn's deadlines (fake clock), the listener's bookkeeping of
utterances (a scripted recognizer behind the `SpeechRecognizer` interface), VAD barge-in on real webrtcvad,
and inbound audio brought to 8 kHz frames."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator

import pytest

from bridge.barge_in import SpeechDetector, VadBargeIn, barge_in_mode
from bridge.call import DtmfEvent
from bridge.dialogue import Listen, Node
from bridge.listening import Goto, Inbound, Listener, ListeningStep, TurnClock
from bridge.ops.metrics import Metrics
from voice.audio import to_frames
from voice.emulators.tone_code import synthesize_pcm
from voice.stt import STTConfig
from voice.stt.base import RecognizerBase, endpointer_config, voice_activity_detector
from voice.stt.endpointer import Endpointer
from voice.stt.errors import STTServerError
from voice.stt.events import (
    FinalTranscript,
    PartialTranscript,
    RecognizerEvent,
    SpeechStarted,
    UtteranceEnded,
)

SILENCE = bytes(320)


# --- TurnClock ------------------------------------------------------------------------------------------


def test_turn_clock_no_input_after_timeout_when_nobody_speaks():
    clock = TurnClock(Listen(timeout_s=6, max_s=15), started=100.0, final_timeout_s=2.0)
    assert clock.due(105.9) is None and clock.next_deadline() == 106.0
    assert clock.due(106.0) == "no_input"


def test_turn_clock_speech_holds_off_no_input_and_is_cut_at_max_s():
    clock = TurnClock(Listen(timeout_s=6, max_s=15), started=100.0, final_timeout_s=2.0, speech_at=105.0)
    assert clock.due(110.0) is None, "the caller is speaking: no no_input"
    assert clock.next_deadline() == 120.0
    assert clock.due(120.0) == "commit"
    clock.cut = True
    assert clock.due(121.0) is None and clock.next_deadline() is None


def test_turn_clock_a_slow_transcript_times_out():
    clock = TurnClock(Listen(), started=0.0, final_timeout_s=2.0, speech_at=1.0, ended_at=3.0)
    assert clock.due(4.9) is None and clock.next_deadline() == 5.0
    assert clock.due(5.0) == "stt_timeout"


# --- Listener -------------------------------------------------------------------------------------------


class ScriptedRecognizer:
    """A recognizer whose events the test writes (the service side of the interface)."""

    audio_format = "pcm_8000"

    def __init__(self, fail_start: bool = False) -> None:
        self.queue: asyncio.Queue[RecognizerEvent | Exception | None] = asyncio.Queue()
        self.fed = 0
        self.commits = 0
        self.closed = False
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise STTServerError("emulated 503", http_status=503)

    def feed(self, frame: bytes, voiced: bool | None = None) -> None:
        self.fed += 1

    def commit(self) -> None:
        self.commits += 1

    async def events(self) -> AsyncIterator[RecognizerEvent]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def _add(self, event: str, **kw: object) -> None:
        self.lines.append((event, kw))

    debug = info = warning = error = exception = _add


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_listener_keeps_utterances_and_a_new_turn_takes_the_one_under_way():
    now = [10.0]
    recognizer = ScriptedRecognizer()
    log = Log()
    metrics = Metrics()
    listener = Listener(recognizer, metrics=metrics, log=log, clock=lambda: now[0])
    listener.start()
    for event in (SpeechStarted(1, 5), UtteranceEnded(1, 40, "silence"), FinalTranscript(1, "раньше"),
                  SpeechStarted(2, 90)):
        recognizer.queue.put_nowait(event)
    await settle()
    assert listener.state == "ready"
    first = listener.begin()
    assert first == 2 and 1 not in listener.utterances, "an answered utterance before the turn is forgotten"
    now[0] = 10.3
    recognizer.queue.put_nowait(PartialTranscript(2, "да"))
    recognizer.queue.put_nowait(UtteranceEnded(2, 120, "silence"))
    await settle()
    now[0] = 10.5
    recognizer.queue.put_nowait(FinalTranscript(2, "да"))
    await settle()
    heard = listener.current(first)
    assert heard is not None and (heard.final, heard.ended_at, heard.final_at) == ("да", 10.3, 10.5)
    assert ("transcript", {"text": "да", "utterance": 2}) in log.lines
    assert metrics.stt_final._sum.get() == pytest.approx(0.2)
    assert metrics.stt_first_partial._sum.get() == pytest.approx(0.3)
    await listener.aclose()
    assert recognizer.closed and listener.state == "closed"


async def test_listener_blips_are_not_answers_and_a_fresh_turn_waits_for_the_next_utterance():
    recognizer = ScriptedRecognizer()
    listener = Listener(recognizer, metrics=Metrics(), log=Log(), clock=lambda: 0.0)
    listener.start()
    recognizer.queue.put_nowait(SpeechStarted(1, 5))
    recognizer.queue.put_nowait(UtteranceEnded(1, 9, "blip"))
    await settle()
    first = listener.begin()
    assert first == 2 and listener.current(first) is None
    await listener.aclose()


async def test_a_recognizer_that_cannot_start_turns_listening_off_and_is_counted():
    log = Log()
    metrics = Metrics()
    listener = Listener(ScriptedRecognizer(fail_start=True), metrics=metrics, log=log)
    listener.start()
    await settle()
    assert listener.state == "failed" and not listener.available
    assert [kw["stage"] for event, kw in log.lines if event == "stt_failed"] == ["start"]
    assert metrics.stt_errors.labels(error="STTServerError")._value.get() == 1
    listener.feed(SILENCE, 8000)  # ignored, no error
    await listener.aclose()


async def test_a_recognizer_failing_mid_call_turns_listening_off():
    recognizer = ScriptedRecognizer()
    listener = Listener(recognizer, metrics=Metrics(), log=Log())
    listener.start()
    listener.feed(SILENCE, 8000)
    recognizer.queue.put_nowait(STTServerError("transcriber_error"))
    await settle()
    assert recognizer.fed == 1 and listener.state == "failed"
    listener.feed(SILENCE, 8000)
    assert recognizer.fed == 1, "a failed recognizer is not fed"
    await listener.aclose()


def test_a_listener_without_recognizer_hears_nothing():
    listener = Listener(None, metrics=Metrics(), log=Log(), clock=lambda: 0.0)
    assert listener.state == "off" and not listener.available


# --- barge-in -------------------------------------------------------------------------------------------


def tone_frames(text: str) -> list[bytes]:
    return to_frames(synthesize_pcm(text, 8000))


def noise_frames(n: int, amplitude: int) -> list[bytes]:
    import random

    rng = random.Random(7)
    return [struct.pack("<160h", *(rng.randint(-amplitude, amplitude) for _ in range(160))) for _ in range(n)]


def feed(detector: VadBargeIn | SpeechDetector, frames: list[bytes]) -> bool:
    for frame in frames:
        detector.feed(frame, 8000)
    return detector.detected.is_set()


async def test_vad_barge_in_fires_on_speech_not_on_a_blip():
    stt = STTConfig()
    detector = VadBargeIn.from_config(stt)
    detector.arm()
    assert not feed(detector, [SILENCE] * 50 + tone_frames("а") + [SILENCE] * 50), "a 60 ms blip"
    assert feed(detector, tone_frames("подождите, пожалуйста"))
    detector.disarm()


async def test_vad_barge_in_ignores_line_hiss_the_energy_detector_takes_for_speech():
    """A noisy line (hiss from the call's start, RMS ~1400, over BARGE_IN_RMS): energy fires on it; the VAD's
    noise floor has learnt it by the time a prompt plays (about 8 s: see voice.stt.vad), and only speech
    over it interrupts."""
    hiss = noise_frames(1000, 2500)
    energy = SpeechDetector(threshold=600, min_ms=60)
    energy.arm()
    assert feed(energy, hiss[:100]), "the energy detector fires on noise"
    vad = VadBargeIn.from_config(STTConfig())
    feed(vad, hiss[:600])  # the first 12 s of the call: a greeting without barge-in
    vad.arm()
    assert not feed(vad, hiss[600:])
    speech = tone_frames("подождите, пожалуйста")
    over_hiss = [struct.pack("<160h", *(max(-32768, min(32767, a + b)) for a, b in
                                         zip(struct.unpack("<160h", s), struct.unpack("<160h", n), strict=True)))
                 for s, n in zip(speech, hiss, strict=False)]
    assert feed(vad, over_hiss), "speech over the hiss does interrupt"


async def test_vad_barge_in_fires_only_while_armed():
    detector = VadBargeIn.from_config(STTConfig())
    assert not feed(detector, tone_frames("подождите, пожалуйста") + [SILENCE] * 50)
    detector.arm()
    assert feed(detector, tone_frames("подождите, пожалуйста"))


def test_barge_in_mode_auto_follows_the_recognizer_setting():
    assert barge_in_mode("auto", STTConfig()) == "energy"
    assert barge_in_mode("auto", STTConfig(stt_provider="openai")) == "vad"
    assert barge_in_mode("energy", STTConfig(stt_provider="openai")) == "energy"
    with pytest.raises(ValueError, match="BARGE_IN_MODE must be one of auto, vad, energy, got 'loud'"):
        barge_in_mode("loud", STTConfig())


# --- inbound audio --------------------------------------------------------------------------------------


def test_inbound_passes_slin8_through_and_brings_16k_to_8k_frames():
    got: list[tuple[int, int]] = []
    inbound = Inbound([lambda frame, rate, voiced: got.append((len(frame), rate))])
    inbound(SILENCE, 8000)
    assert got == [(320, 8000)]
    got.clear()
    tone = struct.pack("<320h", *(int(8000 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(320)))
    for _ in range(10):
        inbound(tone, 16000)  # 20 ms of slin16 each
    assert len(got) in (9, 10) and all(item == (320, 8000) for item in got)


class CountingVad:
    """A real VoiceActivityDetector that counts its passes (what the test is about)."""

    def __init__(self, stt: STTConfig) -> None:
        self.vad = voice_activity_detector(stt)
        self.calls = 0

    def is_speech(self, frame: bytes) -> bool:
        self.calls += 1
        return self.vad.is_speech(frame)


class LocalRecognizer(RecognizerBase):
    """The shared recognizer part (VAD, endpointer, events) with no service behind it."""

    async def start(self) -> None:
        pass


def recorded(endpointer: Endpointer, seen: list[bool]) -> None:
    update = endpointer.update

    def record(voiced: bool) -> list:
        seen.append(voiced)
        return update(voiced)

    endpointer.update = record  # type: ignore[method-assign]


async def test_inbound_classifies_each_frame_once_for_the_barge_in_detector_and_the_endpointer():
    """One VAD pass a frame (the call's VAD, in Inbound), not one per sink: the detector and the
    recognizer's endpointer see the same decisions, and neither runs its own VAD."""
    stt = STTConfig(stt_provider="elevenlabs")
    shared = CountingVad(stt)
    detector = VadBargeIn(CountingVad(stt), Endpointer(endpointer_config(stt)))
    recognizer = LocalRecognizer(stt, "pcm_8000")
    recognizer.vad = CountingVad(stt)  # type: ignore[assignment]
    listener = Listener(recognizer, metrics=Metrics(), log=Log(), clock=lambda: 0.0)
    by_detector: list[bool] = []
    by_recognizer: list[bool] = []
    recorded(detector.endpointer, by_detector)
    recorded(recognizer.endpointer, by_recognizer)
    inbound = Inbound([detector.feed, listener.feed], vad=shared)
    detector.arm()
    frames = [SILENCE] * 20 + tone_frames("подождите, пожалуйста") + [SILENCE] * 40
    for frame in frames:
        inbound(frame, 8000)
    assert shared.calls == len(frames)
    assert detector.vad.calls == 0 and recognizer.vad.calls == 0  # type: ignore[attr-defined]
    assert by_detector == by_recognizer and len(by_detector) == len(frames) and any(by_detector)
    assert detector.detected.is_set(), "the shared decisions still make a barge-in"
    events = []
    while not recognizer._queue.empty():
        events.append(recognizer._queue.get_nowait())
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "BargeInDetected", "UtteranceEnded"]
    await recognizer.close()


def test_without_a_shared_decision_each_sink_classifies_for_itself():
    stt = STTConfig(stt_provider="elevenlabs")
    detector = VadBargeIn(CountingVad(stt), Endpointer(endpointer_config(stt)))
    Inbound([detector.feed])(SILENCE, 8000)
    assert detector.vad.calls == 1  # type: ignore[attr-defined]


class FakeCall:
    """What ListeningStep needs of a call: its events, whether it ended, its log."""

    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()
        self.ended = False
        self.log = Log()


async def test_a_final_transcript_reaches_the_dialogue_in_one_turn_of_the_event_loop():
    """The listener wakes the waiting step itself: each task hop between the transcript and the LLM request
    costs a turn of the loop, as long as the loop's backlog (10-40 ms each at 100 calls in a burst)."""
    recognizer = ScriptedRecognizer()
    listener = Listener(recognizer, metrics=Metrics(), log=Log(), clock=lambda: 1.0)
    listener.state = "ready"
    variables = type("Vars", (), {"values": {}})()
    step = ListeningStep(FakeCall(), listener, variables, final_timeout_s=5.0, metrics=Metrics())  # type: ignore[arg-type]
    node = Node("ask", listen=Listen(into="reply"), next="answer")
    task = asyncio.ensure_future(step.run(node))
    await settle()
    assert not task.done()
    for event in (SpeechStarted(1, 5), UtteranceEnded(1, 40, "silence"), FinalTranscript(1, "да")):
        listener._on_event(event)
    await asyncio.sleep(0)
    assert task.done(), "the step needed more than one turn of the loop to hear the transcript"
    assert task.result() == Goto("answer") and variables.values == {"reply": "да"}


async def test_a_digit_while_listening_is_taken_and_none_is_lost():
    call = FakeCall()
    listener = Listener(ScriptedRecognizer(), metrics=Metrics(), log=Log(), clock=lambda: 1.0)
    listener.state = "ready"
    variables = type("Vars", (), {"values": {}})()
    step = ListeningStep(call, listener, variables, final_timeout_s=5.0, metrics=Metrics())  # type: ignore[arg-type]
    node = Node("ask", listen=Listen(into="reply"), dtmf={"1": "one"}, next="answer")
    task = asyncio.ensure_future(step.run(node))
    await settle()
    listener._on_event(SpeechStarted(1, 5))  # the step re-waits: its digit getter is cancelled and replaced
    await settle()
    call.events.put_nowait(DtmfEvent("1"))
    assert await asyncio.wait_for(task, 1) == "1"
    assert call.events.empty()
