"""Plays a dialogue on one call: playlists of cached fragments and syntheses, DTMF menus, barge-in, fillers.

One `Orchestrator` per call, created with that call's own TTS chain (the TTS specification's lifecycle).
It is the call's main task: when the caller hangs up, the server cancels it with the call's other tasks.

A playlist is resolved one item ahead of playback: while item i plays, item i+1's cache read (and on a
miss, its synthesis) is already running, so a miss in the middle of a playlist adds no silence. Audio goes
to the call's short outbound queue; a barge-in drops that queue and stops within a frame or two.

An `llm` item streams: its prompt goes to the `TextSource` when the item is resolved (ahead of playback,
unless an earlier `llm` item of the same playlist must be heard first, so its answer is in the history),
the answer's pieces are grouped into phrases and spoken over the call's hot TTS WebSocket as they come,
and the answer and the caller's DTMF choices go to the call's `Conversation` memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import Any, TypeVar

from bridge.call import Call, DtmfEvent, HangupEvent
from bridge.config import BridgeConfig
from bridge.conversation import Conversation
from bridge.dialogue import Dialogue, Item, MissingVariable, Node, render
from bridge.llm import AnswerStream, TextSource, phrases_heard
from bridge.ops.metrics import Metrics
from voice.audio import FRAME_MS, FrameStream, rms
from voice.domain.interfaces.cache import AbstractCache
from voice.keys import call_vars_key, static_key, tts_key
from voice.synthesis import Subscription, SynthesisHub
from voice.tts_manager.errors import (
    TTSAuthError,
    TTSError,
    TTSFormatError,
    TTSInputTimeout,
    TTSQuotaError,
    TTSStreamError,
    TTSValidationError,
    TTSVoiceNotFoundError,
)

FALLBACK_FRAGMENT = "fallback"
T = TypeVar("T")
MAX_SILENT_STEPS = 20  # node changes in a row with no audio queued before the dialogue is declared stuck

# What a resolved playlist item is: frames ready to play, a synthesis to follow, an LLM answer being read,
# or nothing (skipped).
Source = list[bytes] | Subscription | AnswerStream | None

# A WebSocket turn that failed with one of these is not retried (the same settings fail again): HTTP next.
_SETTINGS_ERRORS = (TTSAuthError, TTSQuotaError, TTSVoiceNotFoundError, TTSFormatError, TTSValidationError)


class SpeechDetector:
    """Energy-based caller speech detection on inbound frames, for barge-in.

    Called for every inbound frame (50 times a second), so it does one C call (`rms`) and two compares.
    """

    def __init__(self, threshold: int, min_ms: int) -> None:
        self.threshold = threshold
        self.min_ms = min_ms
        self.armed = False
        self.detected = asyncio.Event()
        self._loud_ms = 0.0

    def arm(self) -> None:
        self._loud_ms = 0.0
        self.detected = asyncio.Event()
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def feed(self, payload: bytes, rate: int) -> None:
        if not self.armed:
            return
        if rms(payload) >= self.threshold:
            self._loud_ms += len(payload) * 500 / rate  # bytes -> ms at 16-bit mono
            if self._loud_ms >= self.min_ms:
                self.armed = False
                self.detected.set()
        else:
            self._loud_ms = 0.0


class Interrupted(Exception):
    """A prompt was stopped by the caller: `digit` is the DTMF digit, or None for speech."""

    def __init__(self, digit: str | None) -> None:
        super().__init__(digit)
        self.digit = digit


class Orchestrator:
    def __init__(
        self,
        call: Call,
        dialogue: Dialogue,
        *,
        cache: AbstractCache,
        tts: Any,
        hub: SynthesisHub,
        tts_profile: str,
        config: BridgeConfig,
        metrics: Metrics | None = None,
        llm: TextSource | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        self.call = call
        self.dialogue = dialogue
        self.cache = cache
        self.tts = tts
        self.hub = hub
        self.tts_profile = tts_profile
        self.config = config
        self.metrics = metrics or Metrics()
        self.llm = llm
        self.conversation = conversation
        self.log = call.log
        self.vars: dict[str, str] = dict(dialogue.vars)
        self.speech = SpeechDetector(config.barge_in_rms, config.barge_in_min_ms)
        self.pending_digits: list[str] = []
        self._filler_turn = 0
        self.frames_queued = 0
        self._queued_at_last_step = -1
        self._silent_steps = 0
        call.on_audio = self.speech.feed

    # --- the dialogue --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Play the dialogue from its start node until a node ends it, then hang up."""
        await self._load_vars()
        node: Node | None = self.dialogue.nodes[self.dialogue.start]
        while node is not None:
            self.log.info("node", node=node.name)
            node = await self._run_node(node)
        await self.call.drained()
        await self.call.hangup()

    def _follow(self, node: Node, target: str | None) -> Node | None:
        """The next node, unless the dialogue is spinning: nodes going on at once without a sound.

        The loader refuses empty playlists, but at run time every item of a playlist can be skipped
        (fragments missing, variables missing); a `next` loop would then spin without a pause.
        """
        if target is None:
            return None
        if self._queued_at_last_step == self.frames_queued:
            self._silent_steps += 1
            if self._silent_steps >= MAX_SILENT_STEPS:
                self.log.error("dialogue_spinning", node=node.name, steps=self._silent_steps)
                return None
        else:
            self._silent_steps = 0
        self._queued_at_last_step = self.frames_queued
        return self.dialogue.nodes[target]

    async def _run_node(self, node: Node) -> Node | None:
        digit = await self._play_node(node)
        if node.hangup:
            return None
        if digit is not None:
            target = node.dtmf.get(digit)
            if target is not None:
                self._chose(node, digit)
                return self._follow(node, target)
            self.log.info("dtmf_ignored", node=node.name, digit=digit)
        return await self._await_choice(node)

    async def _play_node(self, node: Node) -> str | None:
        """Play the node's playlist; the digit that interrupted it (or was pressed during it), else None."""
        self.pending_digits.clear()
        try:
            await self._play_interruptible(node.play, node.barge_in)
        except Interrupted as interrupt:
            return interrupt.digit
        return self.pending_digits.pop(0) if self.pending_digits else None

    async def _await_choice(self, node: Node) -> Node | None:
        """After the playlist: wait `timeout_s` for a digit of the menu, then go to `next`.

        Without a menu, `timeout_s` is a pause; a menu without `timeout_s` waits as long as the caller.
        """
        if not node.dtmf:
            if node.timeout_s:
                await asyncio.sleep(node.timeout_s)
            return self._follow(node, node.next)
        loop = asyncio.get_running_loop()
        deadline = None if node.timeout_s is None else loop.time() + node.timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                event = await asyncio.wait_for(self.call.events.get(), remaining)
            except TimeoutError:
                self.log.info("dtmf_timeout", node=node.name)
                return self._follow(node, node.next)
            if isinstance(event, HangupEvent):
                return None
            if isinstance(event, DtmfEvent):
                target = node.dtmf.get(event.digit)
                if target is not None:
                    self._chose(node, event.digit)
                    return self._follow(node, target)
                self.log.info("dtmf_ignored", node=node.name, digit=event.digit)

    def _chose(self, node: Node, digit: str) -> None:
        """A digit moved the dialogue: the LLM's memory of the call gets it."""
        if self.conversation is not None:
            self.conversation.add_choice(node.name, digit)

    # --- playing with barge-in -----------------------------------------------------------------------

    async def _play_interruptible(self, items: Iterable[Item], barge_in: bool) -> None:
        """Play `items` while watching the call's events; raise Interrupted on a barge-in."""
        playing = asyncio.ensure_future(self._play_items(list(items)))
        if barge_in:
            self.speech.arm()
        speech = asyncio.ensure_future(self.speech.detected.wait())
        try:
            while not playing.done():
                getting = asyncio.ensure_future(self.call.events.get())
                waiting = {playing, getting, speech} if barge_in else {playing, getting}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    event = getting.result()
                    if isinstance(event, HangupEvent):
                        return
                    if isinstance(event, DtmfEvent):
                        if barge_in:
                            await self._cut(playing, "dtmf")
                            raise Interrupted(event.digit)
                        self.pending_digits.append(event.digit)
                else:
                    getting.cancel()
                if barge_in and speech.done() and not playing.done():
                    await self._cut(playing, "speech")
                    raise Interrupted(None)
            playing.result()
        finally:
            self.speech.disarm()
            speech.cancel()
            if not playing.done():
                playing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await playing
            elif not playing.cancelled():
                playing.exception()  # a hang-up ends it with CallEnded: retrieved, not reported by the loop

    async def _cut(self, playing: asyncio.Future[None], by: str) -> None:
        playing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await playing
        dropped = self.call.clear_audio()
        self.metrics.barge_ins.labels(by=by).inc()
        self.log.info("barge_in", by=by, frames_dropped=dropped)

    # --- playlists ----------------------------------------------------------------------------------

    async def _play_items(self, items: list[Item]) -> None:
        """Resolve one item ahead while the current one plays.

        An `llm` item after another `llm` item of the playlist is resolved (its request sent) only when its
        turn comes, so that the earlier answer is in its history.
        """
        resolving: list[asyncio.Task[Source]] = []

        def ensure(index: int, *, ahead: bool = False) -> None:
            if index < len(items) and index == len(resolving):
                if ahead and items[index].kind == "llm" and any(i.kind == "llm" for i in items[:index]):
                    return
                resolving.append(asyncio.ensure_future(self._resolve(items[index])))

        try:
            for index in range(len(items)):
                ensure(index)
                ensure(index + 1, ahead=True)
                source = await resolving[index]
                if source is not None:
                    await self._play_source(source, items[index])
        finally:
            for task in resolving:
                if not task.done():
                    task.cancel()
                elif not task.cancelled() and isinstance(task.result(), Subscription):
                    task.result().close()
                elif not task.cancelled() and isinstance(task.result(), AnswerStream):
                    task.result().close()  # an answer not played (barge-in): stop reading it

    async def _play_source(self, source: list[bytes] | Subscription | AnswerStream, item: Item) -> None:
        if isinstance(source, list):
            await self._play_frames(source)
            return
        if isinstance(source, AnswerStream):
            await self._play_answer(source)
            return
        synthesis = source.synthesis
        if not synthesis.first_audio.is_set() and self.config.filler_after_s > 0:
            try:
                await asyncio.wait_for(asyncio.shield(synthesis.first_audio.wait()), self.config.filler_after_s)
            except TimeoutError:
                await self._play_filler()
        try:
            async with contextlib.aclosing(source.frames()) as frames:
                async for frame in frames:
                    self.frames_queued += 1
                    await self.call.play(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.warning("tts_item_failed", kind=item.kind, error=str(exc), error_type=type(exc).__name__)
            await self._play_fallback()

    async def _resolve(self, item: Item) -> Source:
        """What an item sounds like: cached frames, a synthesis in progress, or None to skip it."""
        if item.kind == "static":
            frames = await self.cache.get_audio_chunks(static_key(item.value))
            self.metrics.cache_lookups.labels(kind="static", result="hit" if frames else "miss").inc()
            if frames:
                return frames
            if item.text is None:
                self.log.warning("fragment_missing", fragment=item.value)
                return None
            self.log.info("fragment_missing_spoken", fragment=item.value)
            template = item.text
        elif item.kind == "tts":
            template = item.value
        elif item.kind == "llm":
            prompt = await self._render(item.value)
            return self._ask_llm(prompt) if prompt else None
        else:
            self.log.warning("item_kind_unsupported", kind=item.kind)
            return None
        text = await self._render(template)
        return await self._speech_for(text) if text else None

    async def _speech_for(self, text: str) -> Source:
        key = tts_key(text, self.tts_profile)
        frames = await self.cache.get_audio_chunks(key)
        self.metrics.cache_lookups.labels(kind="tts", result="hit" if frames else "miss").inc()
        if frames:
            return frames
        return self.hub.open(key, text, self.tts)

    async def _render(self, template: str) -> str | None:
        """The template with the call's variables; None (logged) when one is missing or the text is empty."""
        for attempt in range(2):
            try:
                text = render(template, self.vars).strip()
                break
            except MissingVariable as missing:
                if attempt == 0:
                    await self._load_vars()  # the upstream system may have stored them since the call began
                    continue
                self.log.warning("variable_missing", variable=missing.name, template=template)
                return None
        if not text:
            self.log.warning("text_empty", template=template)
            return None
        return text

    async def _load_vars(self) -> None:
        """The dialogue's defaults overridden by the JSON object an upstream system stored at call:<uuid>."""
        raw = await self.cache.get_text(call_vars_key(str(self.call.uuid)))
        if raw is None:
            return
        try:
            stored = json.loads(raw)
        except json.JSONDecodeError as exc:
            self.log.warning("call_vars_invalid", error=f"not JSON: {exc.msg}")
            return
        if not isinstance(stored, Mapping):
            self.log.warning("call_vars_invalid", error="not a JSON object")
            return
        self.vars = {**self.dialogue.vars, **{str(k): _as_text(v) for k, v in stored.items() if v is not None}}

    async def _play_filler(self) -> None:
        names = self.config.filler_names
        if not names:
            return
        name = names[self._filler_turn % len(names)]
        self._filler_turn += 1
        frames = await self.cache.get_audio_chunks(static_key(name))
        if frames:
            self.metrics.fillers.inc()
            self.log.info("filler", fragment=name)
            await self._play_frames(frames)

    async def _play_fallback(self) -> None:
        frames = await self.cache.get_audio_chunks(static_key(FALLBACK_FRAGMENT))
        if frames:
            await self._play_frames(frames)
        else:
            self.log.warning("fragment_missing", fragment=FALLBACK_FRAGMENT)

    async def _play_frames(self, frames: list[bytes]) -> int:
        self.frames_queued += len(frames)
        await self.call.play_frames(frames)
        return len(frames)

    # --- streamed text (LLM answers) ---------------------------------------------------------------

    def _ask_llm(self, prompt: str) -> AnswerStream | None:
        """Send `prompt` with the conversation so far; the answer is read in the background (a call task)."""
        if self.llm is None:
            self.log.warning("llm_unconfigured", prompt=prompt)
            return None
        history = self.conversation.messages() if self.conversation is not None else []
        answer = AnswerStream(prompt)
        answer.task = self.call.start_task(answer.read(self.llm.stream(prompt, history)), name="llm")
        return answer

    async def _play_answer(self, answer: AnswerStream) -> None:
        """Speak an LLM answer and remember it (cut short, when a barge-in or hang-up stopped it)."""
        completed = False
        try:
            await self._speak_answer(answer)
            completed = True
        finally:
            await answer.aclose()
            if self.conversation is not None:
                self.conversation.add_exchange(answer.prompt, answer.text(0, answer.sent), interrupted=not completed)
        if answer.error is not None:
            self.metrics.errors.labels(where="llm").inc()
            self.log.warning("llm_failed", error=str(answer.error), error_type=type(answer.error).__name__,
                             phrases=len(answer.phrases))
            if not answer.phrases:  # nothing was said: the caller hears the fallback phrase, not silence
                await self._play_fallback()

    async def speak_text_stream(self, pieces: AsyncIterator[str]) -> str:
        """Speak text that arrives piece by piece over the TTS WebSocket, playing audio as it comes; the text
        spoken is returned. Failures are handled as for an `llm` item (see `_speak_answer`)."""
        answer = AnswerStream()
        answer.task = self.call.start_task(answer.read(pieces), name="llm")
        try:
            await self._speak_answer(answer)
        finally:
            await answer.aclose()
        return answer.text()

    async def _speak_answer(self, answer: AnswerStream) -> None:
        """Speak `answer`'s phrases as they come: over the WebSocket, retried once, then over HTTP.

        A turn that fails after some audio played is resumed from the first phrase the caller has not
        certainly heard in full (`phrases_heard`), not from the beginning: a cut phrase is said again
        whole, phrases already heard are not. A failure caused by the settings (key, quota, voice, format)
        is not retried on the WebSocket. The HTTP fallback speaks what is left, batch by batch as the LLM
        produces it.
        """
        start = 0
        filler = _Filler(self.config.filler_after_s)
        for attempt in (1, 2):
            try:
                await self._speak_over_websocket(answer, start, filler)
                return
            except _TurnFailed as failed:
                self.metrics.tts_errors.labels(error=type(failed.error).__name__).inc()
                self.log.warning("tts_ws_failed", attempt=attempt, error=str(failed.error),
                                 error_type=type(failed.error).__name__, resume_at_phrase=failed.resume_at,
                                 phrases_sent=failed.sent, audio_s=round(failed.audio_s, 2))
                start = failed.resume_at
                if isinstance(failed.error, _SETTINGS_ERRORS):
                    break
        await self._speak_over_http(answer, start)

    async def _speak_over_websocket(self, answer: AnswerStream, start: int, filler: _Filler) -> None:
        """One WebSocket turn speaking `answer` from phrase `start`; raises `_TurnFailed` if the turn fails."""
        if not await self._with_filler(answer.wait(start), filler):
            return  # nothing (more) to say
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            text_queue, audio_queue = await self.tts.start_llm_stream()
        except TTSError as exc:
            raise _TurnFailed(exc, resume_at=start, sent=0, audio_s=0.0) from exc
        self.metrics.tts_requests.labels(api="ws").inc()
        frames = FrameStream(self.tts.config.output_format)
        sent: list[str] = []

        async def feed() -> None:
            index = start
            while await answer.wait(index):
                phrase = answer.phrases[index]
                await text_queue.put(phrase)
                sent.append(phrase)
                index += 1
                answer.sent = max(answer.sent, index)
            await text_queue.put(None)

        feeder = asyncio.ensure_future(feed())
        played = 0
        finished = False
        try:
            chunk = await self._with_filler(audio_queue.get(), filler)
            filler.cancel()  # the answer is audible now
            if isinstance(chunk, bytes):
                self.metrics.tts_first_byte.labels(api="ws").observe(loop.time() - started)
            while chunk is not None:
                if isinstance(chunk, BaseException):
                    played += await self._play_frames(frames.flush())
                    raise _TurnFailed.after(chunk, start, sent, played)
                played += await self._play_frames(frames.feed(chunk))
                chunk = await audio_queue.get()
            played += await self._play_frames(frames.flush())
            if not feeder.done():  # the server ended the turn before it had all the text
                error = TTSStreamError("the WebSocket turn ended before the end of the text")
                raise _TurnFailed.after(error, start, sent, played)
            finished = True
        finally:
            if not finished:  # barge-in, hang-up or failure: end this turn and its socket now
                await self.tts.stop_llm_stream()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder

    async def _speak_over_http(self, answer: AnswerStream, start: int) -> None:
        """Speak phrases `start:` with HTTP syntheses: whatever has arrived, as one text, while the LLM goes
        on; then the next batch. A failure here plays the fallback phrase and ends the answer."""
        index = start
        while await answer.wait(index):
            end = len(answer.phrases)
            text = answer.text(index, end)
            answer.sent = max(answer.sent, end)
            index = end
            self.metrics.tts_requests.labels(api="http").inc()
            try:
                async with contextlib.aclosing(self.tts.stream_static_frames(text)) as frames:
                    async for frame in frames:
                        self.frames_queued += 1
                        await self.call.play(frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.tts_errors.labels(error=type(exc).__name__).inc()
                self.log.warning("tts_item_failed", kind="llm", error=str(exc), error_type=type(exc).__name__)
                await self._play_fallback()
                return

    async def _with_filler(self, awaitable: Awaitable[T], filler: _Filler) -> T:
        """Await `awaitable`; if the filler's time comes first, play a filler fragment meanwhile (once)."""
        task = asyncio.ensure_future(awaitable)
        try:
            delay = filler.remaining()
            if delay is not None and not task.done():
                done, _ = await asyncio.wait([task], timeout=delay)
                if not done:
                    filler.cancel()
                    await self._play_filler()
            return await task
        finally:
            if not task.done():
                task.cancel()


class _Filler:
    """When a filler is due while an answer is awaited: `after_s` from the answer's start, once, never
    after its first audio. `after_s` 0 disables it (as for syntheses)."""

    def __init__(self, after_s: float) -> None:
        self.deadline = asyncio.get_running_loop().time() + after_s if after_s > 0 else None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def cancel(self) -> None:
        self.deadline = None


class _TurnFailed(Exception):
    """A WebSocket turn failed: its error, the phrase to resume from, what it had sent and played."""

    def __init__(self, error: BaseException, *, resume_at: int, sent: int, audio_s: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.resume_at = resume_at
        self.sent = sent
        self.audio_s = audio_s

    @classmethod
    def after(cls, error: BaseException, start: int, sent: list[str], frames_played: int) -> _TurnFailed:
        """A turn from phrase `start` failed after sending `sent` and playing `frames_played` frames.

        It resumes after the phrases the caller certainly heard: all it sent when the server gave up
        waiting for more text (`TTSInputTimeout`: it was idle, so everything sent had been spoken and its
        audio had arrived before the error), else as many as the audio played surely covers.
        """
        audio_s = frames_played * FRAME_MS / 1000
        heard = len(sent) if isinstance(error, TTSInputTimeout) else phrases_heard(sent, audio_s)
        return cls(error, resume_at=start + heard, sent=len(sent), audio_s=audio_s)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
