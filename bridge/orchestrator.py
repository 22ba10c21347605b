"""Plays a dialogue on one call: playlists of cached fragments and syntheses, DTMF menus, barge-in, fillers.

One `Orchestrator` per call, created with that call's own TTS chain (the TTS specification's lifecycle).
It is the call's main task: when the caller hangs up, the server cancels it with the call's other tasks.

A playlist is resolved one item ahead of playback: while item i plays, item i+1's cache read (and on a
miss, its synthesis) is already running, so a miss in the middle of a playlist adds no silence. Audio goes
to the call's short outbound queue; a barge-in drops that queue and stops within a frame or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from bridge.call import Call, DtmfEvent, HangupEvent
from bridge.config import BridgeConfig
from bridge.dialogue import Dialogue, Item, MissingVariable, Node, render
from bridge.metrics import Metrics
from voice.audio import FrameStream, rms
from voice.domain.interfaces.cache import AbstractCache
from voice.keys import call_vars_key, static_key, tts_key
from voice.synthesis import Subscription, SynthesisHub
from voice.tts_manager.errors import TTSConnectionError, TTSError

FALLBACK_FRAGMENT = "fallback"
MAX_SILENT_STEPS = 20  # node changes in a row with no audio queued before the dialogue is declared stuck

# What a resolved playlist item is: frames ready to play, a synthesis to follow, or nothing (skipped).
Source = list[bytes] | Subscription | None


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
    ) -> None:
        self.call = call
        self.dialogue = dialogue
        self.cache = cache
        self.tts = tts
        self.hub = hub
        self.tts_profile = tts_profile
        self.config = config
        self.metrics = metrics or Metrics()
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
                    return self._follow(node, target)
                self.log.info("dtmf_ignored", node=node.name, digit=event.digit)

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
        """Resolve one item ahead while the current one plays."""
        resolving: list[asyncio.Task[Source]] = []

        def ensure(index: int) -> None:
            if index < len(items) and index == len(resolving):
                resolving.append(asyncio.ensure_future(self._resolve(items[index])))

        try:
            for index in range(len(items)):
                ensure(index)
                ensure(index + 1)
                source = await resolving[index]
                if source is not None:
                    await self._play_source(source, items[index])
        finally:
            for task in resolving:
                if not task.done():
                    task.cancel()
                elif not task.cancelled() and isinstance(task.result(), Subscription):
                    task.result().close()

    async def _play_source(self, source: list[bytes] | Subscription, item: Item) -> None:
        if isinstance(source, list):
            await self._play_frames(source)
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

    async def _play_frames(self, frames: list[bytes]) -> None:
        self.frames_queued += len(frames)
        await self.call.play_frames(frames)

    # --- streamed text (LLM answers) ---------------------------------------------------------------

    async def speak_text_stream(self, pieces: AsyncIterator[str]) -> None:
        """Speak text that arrives piece by piece over the TTS WebSocket, playing audio as it comes.

        `TTSConnectionError` gets one retry on a fresh connection; if no WebSocket can be had, the text is
        collected and spoken over HTTP instead, so the caller hears the answer either way.
        """
        spoken: list[str] = []
        source = _Replayable(pieces, spoken)
        for attempt in range(2):
            try:
                await self._speak_over_websocket(source.replay())
                return
            except asyncio.CancelledError:
                raise
            except TTSConnectionError as exc:
                self.log.warning("tts_ws_unavailable", attempt=attempt + 1, error=str(exc))
            except TTSError as exc:
                self.log.warning("tts_ws_failed", attempt=attempt + 1, error=str(exc))
                break
        await source.exhaust()
        text = " ".join(piece.strip() for piece in spoken if piece.strip())
        if text:
            subscription = self.hub.open(tts_key(text, self.tts_profile), text, self.tts)
            await self._play_source(subscription, Item(kind="tts", value=text))

    async def _speak_over_websocket(self, pieces: AsyncIterator[str]) -> None:
        text_queue, audio_queue = await self.tts.start_llm_stream()
        frames = FrameStream(self.tts.config.output_format)

        async def feed() -> None:
            async for piece in pieces:
                await text_queue.put(piece)
            await text_queue.put(None)

        feeder = asyncio.ensure_future(feed())
        finished = False
        try:
            while True:
                chunk = await audio_queue.get()
                if chunk is None:
                    break
                if isinstance(chunk, BaseException):
                    raise chunk
                await self._play_frames(frames.feed(chunk))
            await self._play_frames(frames.flush())
            finished = True
        finally:
            if not finished:  # barge-in, hang-up or failure: end this turn and its socket now
                await self.tts.stop_llm_stream()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder


class _Replayable:
    """Text pieces read once from their source and remembered, so a retry can start from the beginning."""

    def __init__(self, source: AsyncIterator[str], seen: list[str]) -> None:
        self._source = source
        self.seen = seen
        self._exhausted = False

    async def replay(self) -> AsyncIterator[str]:
        for piece in list(self.seen):
            yield piece
        if self._exhausted:
            return
        async for piece in self._source:
            self.seen.append(piece)
            yield piece
        self._exhausted = True

    async def exhaust(self) -> None:
        if not self._exhausted:
            async for piece in self._source:
                self.seen.append(piece)
            self._exhausted = True


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
