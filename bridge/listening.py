"""Hearing the caller: the call's recognizer (`Listener`) and a node's listening step (`ListeningStep`).

A call whose dialogue listens gets one speech recognizer (`voice.stt.create_recognizer`) for its whole life,
as it gets one TTS chain: `Listener` feeds it every inbound frame (`Inbound` brings any inbound rate to the
20 ms 8 kHz frames it takes), reads its events in a task of the call's group, and closes it at hang-up. It
keeps, per utterance of the caller, when it started and ended and its final transcript, so that a node that
starts listening can take the utterance already under way (the caller who barged in) and ignore older ones.

`ListeningStep` runs after a node's playlist (a `NodeStep` beside `PlaybackStep`): it waits for the caller
to start speaking (`listen.timeout_s`), for the end of the utterance (the recognizer's endpointing, or
`listen.max_s`), and for its final transcript (`STT_REQUEST_TIMEOUT`: a slow recognizer is a timeout, not
a hang); digits of the node's `dtmf` are taken meanwhile. The transcript becomes the call variable
`listen.into` and picks the next node (`Node.choose`). Without a working recognizer (none configured, the
service refused, it failed mid-call) the node still takes digits, and goes `no_input` otherwise: the call
goes on.

Deadlines are decided by `TurnClock`, a pure object that takes `now`; the step is its asyncio driver.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, Protocol

from bridge.call import DtmfEvent, HangupEvent
from bridge.dialogue import Listen, Node
from bridge.interfaces import CallLine, Logger
from bridge.ops.metrics import Metrics
from voice.audio import Framer, Resampler
from voice.stt import (
    BargeInDetected,
    FinalTranscript,
    PartialTranscript,
    RecognizerEvent,
    SpeechRecognizer,
    SpeechStarted,
    STTError,
    UtteranceEnded,
)
from voice.stt.vad import FrameClassifier
from voice.tasks import cancel_and_wait

__all__ = ["Goto", "Inbound", "Listener", "ListeningStep", "TurnClock", "TurnLatency", "Utterance", "VariableStore"]

FRAME_BYTES = 320
SAMPLE_RATE = 8000
KEEP_UTTERANCES = 32
"""Utterances remembered between listening nodes (only the one under way or the next is ever an answer)."""


class FrameSink(Protocol):
    def __call__(self, frame: bytes, rate: int, voiced: bool | None, /) -> None: ...


class Inbound:
    """The call's `on_audio` callback: inbound audio as 20 ms 8 kHz slin frames, handed to each sink with
    the frame's VAD decision.

    AudioSocket's usual 320-byte slin8 frame passes straight through (the hot path, 50 times a second);
    other rates (0x11-0x18, slin16 mislabelled) are resampled and re-framed first. `vad`, the call's one
    voice activity detector, classifies each frame once, and every sink (the barge-in detector, the
    recognizer's endpointer) gets that decision: one webrtcvad pass and one noise floor a frame, not one per
    sink. Without it the sinks get None and judge for themselves.
    """

    def __init__(self, sinks: Sequence[FrameSink], vad: FrameClassifier | None = None) -> None:
        self.sinks = tuple(sinks)
        self.vad = vad
        self._resampler: Resampler | None = None
        self._framer = Framer(FRAME_BYTES)

    def __call__(self, payload: bytes, rate: int) -> None:
        vad = self.vad
        if rate == SAMPLE_RATE and len(payload) == FRAME_BYTES:
            voiced = vad.is_speech(payload) if vad is not None else None
            for sink in self.sinks:
                sink(payload, SAMPLE_RATE, voiced)
            return
        if self._resampler is None or self._resampler.rate != rate:
            self._resampler = Resampler(rate)
        for frame in self._framer.feed(self._resampler.feed(payload)):
            voiced = vad.is_speech(frame) if vad is not None else None
            for sink in self.sinks:
                sink(frame, SAMPLE_RATE, voiced)


@dataclasses.dataclass
class Utterance:
    """One utterance of the caller as the listener saw it (times are the event loop's)."""

    number: int
    started_at: float
    ended_at: float | None = None
    blip: bool = False
    first_partial_at: float | None = None
    final: str | None = None
    final_at: float | None = None


class Listener:
    """One call's recognizer: fed, read, closed; what the caller said, utterance by utterance."""

    def __init__(self, recognizer: SpeechRecognizer | None, *, metrics: Metrics, log: Logger,
                 clock: Callable[[], float] | None = None) -> None:
        self.recognizer = recognizer
        self.metrics = metrics
        self.log = log
        self.clock = clock or asyncio.get_running_loop().time
        self.state: Literal["off", "starting", "ready", "failed", "closed"] = (
            "off" if recognizer is None else "starting")
        self.utterances: dict[int, Utterance] = {}
        self.changed = asyncio.Event()
        """Set on every event (a new utterance, an end, a transcript, a failure); the step clears it."""
        self._wakers: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether speech can be heard now (a recognizer that is starting counts: frames are buffered)."""
        return self.state in ("starting", "ready")

    def feed(self, frame: bytes, rate: int, voiced: bool | None = None) -> None:
        """One inbound 20 ms 8 kHz frame (an `Inbound` sink), with the call's VAD decision when it has one."""
        if self.recognizer is not None and self.state in ("starting", "ready"):
            self.recognizer.feed(frame, voiced)

    def commit(self) -> None:
        """End the caller's utterance now (it reached the node's `max_s`)."""
        if self.recognizer is not None and self.available:
            self.recognizer.commit()

    async def run(self) -> None:
        """Start the recognizer and read its events until it ends; a failure turns listening off, quietly
        for the call (it goes on with digits), loudly in the log and the metrics."""
        if self.recognizer is None:
            return
        stage = "start"
        try:
            await self.recognizer.start()
            stage = "listening"
            if self.state == "starting":
                self.state = "ready"
            async for event in self.recognizer.events():
                self._on_event(event)
        except STTError as exc:
            self._failed(stage, exc, exc.code)
        except Exception as exc:  # a bug in a recognizer must not end the call: it goes on without one
            self.log.exception("stt_failed", stage=stage, error=str(exc), error_type=type(exc).__name__)
            self._failed(stage, exc, None, logged=True)

    def start(self, spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]] | None = None) -> None:
        """Run `run()` as a task: of the call's group when `spawn` is `call.start_task` (a hang-up cancels it)."""
        if self._task is None and self.recognizer is not None:
            self._task = asyncio.ensure_future(self.run()) if spawn is None else spawn(self.run())

    async def aclose(self) -> None:
        """Hang-up: close the recognizer (its sockets and tasks) and stop reading it."""
        if self.state != "failed":
            self.state = "closed"
        if self.recognizer is not None:
            await self.recognizer.close()
        await cancel_and_wait(self._task)
        self._signal()

    def waker(self) -> asyncio.Future[None]:
        """A future resolved, synchronously, at the next event: the step awaits it directly, so a final
        transcript reaches the dialogue in one turn of the event loop (an `Event.wait()` task and
        `asyncio.wait` took three or four, each as long as the loop's backlog at 100 calls)."""
        waker = asyncio.get_running_loop().create_future()
        self._wakers.append(waker)
        return waker

    def _signal(self) -> None:
        self.changed.set()
        wakers, self._wakers = self._wakers, []
        for waker in wakers:
            if not waker.done():
                waker.set_result(None)

    def begin(self) -> int:
        """A node starts listening: the first utterance it takes (the one under way or awaiting its text,
        e.g. the words that barged in; else the next one). Older utterances are forgotten."""
        waiting = [n for n, u in self.utterances.items() if not u.blip and u.final is None]
        first = min(waiting) if waiting else max(self.utterances, default=0) + 1
        for number in [n for n in self.utterances if n < first]:
            del self.utterances[number]
        return first

    def current(self, first: int) -> Utterance | None:
        """The earliest utterance from `first` on that is not a blip (it may be under way, ended, or heard)."""
        for number in sorted(self.utterances):
            utterance = self.utterances[number]
            if number >= first and not utterance.blip:
                return utterance
        return None

    # --- the recognizer's events ----------------------------------------------------------------------------

    def _on_event(self, event: RecognizerEvent) -> None:
        now = self.clock()
        if isinstance(event, SpeechStarted):
            self.utterances[event.utterance] = Utterance(event.utterance, now)
            if len(self.utterances) > KEEP_UTTERANCES:  # a long call that rarely listens: forget the oldest
                del self.utterances[min(self.utterances)]
            self.log.debug("speech_started", utterance=event.utterance)
        elif isinstance(event, UtteranceEnded):
            utterance = self.utterances.get(event.utterance)
            if utterance is not None:
                utterance.ended_at = now
                utterance.blip = event.reason == "blip"
            self.log.debug("speech_ended", utterance=event.utterance, reason=event.reason)
        elif isinstance(event, PartialTranscript):
            utterance = self.utterances.get(event.utterance)
            if utterance is not None and utterance.first_partial_at is None and event.text:
                utterance.first_partial_at = now
                self.metrics.stt_first_partial.observe(now - utterance.started_at)
            return  # a partial changes no decision: do not wake the step
        elif isinstance(event, FinalTranscript):
            utterance = self.utterances.get(event.utterance)
            if utterance is None:  # server VAD commits may number differently; keep the text anyway
                utterance = self.utterances[event.utterance] = Utterance(event.utterance, now, ended_at=now)
            if utterance.ended_at is None:
                utterance.ended_at = now
            utterance.final, utterance.final_at = event.text, now
            self.metrics.stt_final.observe(now - utterance.ended_at)
            self.log.info("transcript", text=event.text, utterance=event.utterance)
        elif isinstance(event, BargeInDetected):
            return
        self._signal()

    def _failed(self, stage: str, exc: BaseException, code: str | None, *, logged: bool = False) -> None:
        if self.state == "closed":
            return
        self.state = "failed"
        self.metrics.stt_errors.labels(error=type(exc).__name__).inc()
        if not logged:
            self.log.warning("stt_failed", stage=stage, error=str(exc), error_type=type(exc).__name__, code=code)
        self._signal()


class VariableStore(Protocol):
    values: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Goto:
    """A step's decision to leave the node for `target` (None: the call ends)."""

    target: str | None


@dataclasses.dataclass
class TurnClock:
    """The deadlines of one listening turn, decided from `now` (pure: tested with a fake clock).

    Before speech: `no_input` at `started + timeout_s`. During speech: the utterance is cut (`commit`) at
    `speech_at + max_s`. After it ended: `stt_timeout` at `ended_at + final_timeout_s`.
    """

    listen: Listen
    started: float
    final_timeout_s: float
    speech_at: float | None = None
    ended_at: float | None = None
    cut: bool = False

    def due(self, now: float) -> Literal["no_input", "commit", "stt_timeout"] | None:
        if self.ended_at is not None:
            return "stt_timeout" if now >= self.ended_at + self.final_timeout_s else None
        if self.speech_at is not None:
            return "commit" if not self.cut and now >= self.speech_at + self.listen.max_s else None
        return "no_input" if now >= self.started + self.listen.timeout_s else None

    def next_deadline(self) -> float | None:
        if self.ended_at is not None:
            return self.ended_at + self.final_timeout_s
        if self.speech_at is not None:
            return None if self.cut else self.speech_at + self.listen.max_s
        return self.started + self.listen.timeout_s


class TurnTimer(Protocol):
    """Told when a heard answer's turn began, to time the first audio that answers it."""

    def turn_started(self, at: float) -> None: ...


class TurnLatency:
    """Times a turn: from the end of the caller's utterance to the first audio queued after it (the answer,
    or the next node's prompt) into `voicebridge_turn_latency_seconds`."""

    def __init__(self, speaker: AudioWatch, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.speaker = speaker
        self.metrics = metrics
        self.clock = clock
        self.last: float | None = None
        """The latest turn's latency in seconds (benchmarks and tests read it)."""

    def turn_started(self, at: float) -> None:
        def answered() -> None:
            self.last = self.clock() - at
            self.metrics.turn_latency.observe(self.last)

        self.speaker.on_next_audio = answered


class AudioWatch(Protocol):
    on_next_audio: Callable[[], None] | None


class ListeningStep:
    """A node's listening, after its playlist: what the caller says (or presses) picks the next node."""

    def __init__(self, call: CallLine, listener: Listener, variables: VariableStore, *, final_timeout_s: float,
                 metrics: Metrics, turns: TurnTimer | None = None) -> None:
        self.call = call
        self.listener = listener
        self.variables = variables
        self.final_timeout_s = final_timeout_s
        self.metrics = metrics
        self.turns = turns
        self.log = call.log

    async def run(self, node: Node) -> str | Goto | None:
        """A mapped digit (the runner follows it), a `Goto`, or None (no listening here, or a hang-up)."""
        if node.listen is None or self.call.ended:
            return None
        loop = asyncio.get_running_loop()
        if not self.listener.available:
            self.log.info("listening_without_stt", node=node.name, state=self.listener.state)
            return await self._digits_only(node, node.listen.timeout_s)
        first = self.listener.begin()
        clock = TurnClock(node.listen, loop.time(), self.final_timeout_s)
        self.log.info("listening", node=node.name, utterance=first)
        while not self.call.ended:
            heard = self.listener.current(first)
            if heard is not None and heard.final is not None:
                return self._heard(node, heard)
            if not self.listener.available:
                self.log.info("listening_without_stt", node=node.name, state=self.listener.state)
                remaining = node.listen.timeout_s - (loop.time() - clock.started)
                return await self._digits_only(node, max(0.0, remaining))
            clock.speech_at = heard.started_at if heard is not None else None
            clock.ended_at = heard.ended_at if heard is not None else None
            now = loop.time()
            due = clock.due(now)
            if due == "commit":
                clock.cut = True
                self.log.info("utterance_cut", node=node.name, max_s=node.listen.max_s)
                self.listener.commit()
                continue
            if due == "no_input":
                return self._go(node, None, "no_input")
            if due == "stt_timeout":
                self.metrics.stt_errors.labels(error="timeout").inc()
                self.log.warning("stt_timeout", node=node.name, waited_s=self.final_timeout_s,
                                 utterance=heard.number if heard else None)
                return self._go(node, None, "stt_timeout")
            deadline = clock.next_deadline()
            event = await self._next_event(None if deadline is None else max(0.0, deadline - now))
            if isinstance(event, HangupEvent):
                return None
            if isinstance(event, DtmfEvent):
                if event.digit in node.dtmf:
                    self.variables.values[node.listen.into] = ""
                    return event.digit
                self.log.info("dtmf_ignored", node=node.name, digit=event.digit)
        return None

    async def _next_event(self, timeout: float | None) -> DtmfEvent | HangupEvent | None:
        """The caller's next digit or hang-up; None when the listener changed or the time is up.

        One future wakes the step, whichever comes first: the listener resolves it itself (no task between
        a transcript and the dialogue), the digit getter's completion, or the timer. A getter still waiting
        is cancelled and left to finish: a cancelled `Queue.get` leaves its item in the queue.
        """
        if self.listener.changed.is_set():
            self.listener.changed.clear()
            return None
        loop = asyncio.get_running_loop()
        events = self.call.events
        if not events.empty():
            return events.get_nowait()
        wake = self.listener.waker()

        def wake_up(*_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        getting = asyncio.ensure_future(events.get())
        getting.add_done_callback(wake_up)
        timer = loop.call_later(timeout, wake_up) if timeout is not None else None
        try:
            await wake
        finally:
            if timer is not None:
                timer.cancel()
            if not getting.done():
                getting.cancel()
        self.listener.changed.clear()
        if getting.done() and not getting.cancelled():
            return getting.result()
        return None

    def _heard(self, node: Node, utterance: Utterance) -> Goto:
        assert node.listen is not None and utterance.final is not None
        self.variables.values[node.listen.into] = utterance.final
        choice = node.choose(utterance.final)
        if self.turns is not None and utterance.ended_at is not None:
            self.turns.turn_started(utterance.ended_at)
        self.metrics.spoken_choices.labels(outcome=choice.outcome).inc()
        self.log.info("spoken_choice", node=node.name, outcome=choice.outcome, pattern=choice.pattern,
                      target=choice.target, utterance=utterance.number)
        return Goto(choice.target)

    def _go(self, node: Node, transcript: str | None, why: str) -> Goto:
        assert node.listen is not None
        self.variables.values[node.listen.into] = ""  # nothing heard: `{reply}` says so, it is not stale
        choice = node.choose(transcript)
        self.metrics.spoken_choices.labels(outcome=choice.outcome).inc()
        self.log.info("spoken_choice", node=node.name, outcome=choice.outcome, reason=why, target=choice.target)
        return Goto(choice.target)

    async def _digits_only(self, node: Node, wait_s: float) -> str | Goto | None:
        """No recognizer: the node's digits for `wait_s` (at once `no_input` when it has none)."""
        assert node.listen is not None
        if node.dtmf:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while not self.call.ended:
                try:
                    event = await asyncio.wait_for(self.call.events.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                if isinstance(event, HangupEvent):
                    return None
                if event.digit in node.dtmf:
                    self.variables.values[node.listen.into] = ""
                    return event.digit
                self.log.info("dtmf_ignored", node=node.name, digit=event.digit)
        if self.call.ended:
            return None
        return self._go(node, None, "no_input")
