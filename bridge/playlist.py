"""Playing a node's playlist: items resolved one ahead, barge-in, fillers while a synthesis starts, fallback.

A playlist is resolved one item ahead of playback: while item i plays, item i+1's cache read (and on a
miss, its synthesis) is already running, so a miss in the middle of a playlist adds no silence. An `llm`
item's prompt is sent when the item is resolved (ahead of playback, unless an earlier `llm` item of the
same playlist must be heard first, so its answer is in the history); `bridge.answers` speaks it.

Every task of a playlist (the playback, the items being resolved, the answers being read) belongs to the
playlist's task group: a barge-in or a hang-up that stops the playlist stops all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.answers import Answers
from bridge.barge_in import BargeInDetector
from bridge.call import CallEnded, DtmfEvent, HangupEvent
from bridge.dialogue import Item
from bridge.interfaces import CallLine, CallVoice
from bridge.ops.metrics import Metrics
from bridge.speaker import FragmentReader, Speaker
from bridge.variables import CallVariables
from voice.keys import static_key, tts_key
from voice.llm import AnswerStream
from voice.synthesis import Subscription, SynthesisHub
from voice.tasks import cancel_and_wait, task_group

__all__ = ["Playlist", "Source", "Synthesizer"]

# What a resolved playlist item is: frames ready to play, a synthesis to follow, an LLM answer being read,
# or nothing (skipped).
Source = list[bytes] | Subscription | AnswerStream | None


@dataclass(frozen=True, slots=True)
class Synthesizer:
    """Where text that is not cached is spoken from: the process's hub, with this call's voice and profile."""

    hub: SynthesisHub
    voice: CallVoice
    profile: str


class Playlist:
    """Plays playlists on one call (one at a time), with barge-in by DTMF or speech when a node asks."""

    def __init__(self, call: CallLine, speaker: Speaker, answers: Answers, *, fragments: FragmentReader,
                 synthesis: Synthesizer, variables: CallVariables, detector: BargeInDetector,
                 filler_after_s: float, metrics: Metrics) -> None:
        self.call = call
        self.speaker = speaker
        self.answers = answers
        self.fragments = fragments
        self.synthesis = synthesis
        self.variables = variables
        self.detector = detector
        self.filler_after_s = filler_after_s
        self.metrics = metrics
        self.log = call.log

    async def play(self, items: Sequence[Item], barge_in: bool) -> str | None:
        """Play `items` while watching the caller: the DTMF digit that cut it (barge-in) or was pressed
        during it (the first one), else None. Speech that cuts it returns None too. A hang-up ends it."""
        pending: list[str] = []
        if barge_in:
            self.detector.arm()
        try:
            async with task_group() as group:
                playing = group.create_task(self._play_items(list(items)), name="playlist")
                speech = group.create_task(self.detector.detected.wait(), name="barge-in") if barge_in else None
                cut = await self._watch(playing, speech, barge_in, pending)
                await cancel_and_wait(speech)
                if cut is not None:
                    await cancel_and_wait(playing)
                    dropped = self.call.clear_audio()
                    by = "speech" if cut == "" else "dtmf"
                    self.metrics.barge_ins.labels(by=by).inc()
                    self.log.info("barge_in", by=by, frames_dropped=dropped)
                    return cut or None
        finally:
            self.detector.disarm()
        return pending[0] if pending else None

    async def _watch(self, playing: asyncio.Task[None], speech: asyncio.Task[bool] | None, barge_in: bool,
                     pending: list[str]) -> str | None:
        """Until the playlist ends: a digit that cuts it ("" for speech), or None when it played out or the
        call hung up (then the playback was stopped by the hang-up)."""
        while not playing.done():
            getting = asyncio.ensure_future(self.call.events.get())
            waiting = {playing, getting} if speech is None else {playing, getting, speech}
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getting.done():
                    getting.cancel()
            if getting.done() and not getting.cancelled():
                event = getting.result()
                if isinstance(event, HangupEvent):
                    await cancel_and_wait(playing)
                    return None
                if isinstance(event, DtmfEvent):
                    if barge_in:
                        return event.digit
                    pending.append(event.digit)
            if speech is not None and speech.done() and not playing.done():
                return ""
        return None

    async def _play_items(self, items: list[Item]) -> None:
        """Resolve one item ahead while the current one plays.

        An `llm` item after another `llm` item of the playlist is resolved (its request sent) only when its
        turn comes, so that the earlier answer is in its history.
        """
        resolving: list[asyncio.Task[Source]] = []
        try:
            async with task_group() as group:

                def ensure(index: int, *, ahead: bool = False) -> None:
                    if index < len(items) and index == len(resolving):
                        if ahead and items[index].kind == "llm" and any(i.kind == "llm" for i in items[:index]):
                            return
                        resolving.append(group.create_task(self._resolve(items[index], group),
                                                           name=f"resolve {index}"))

                for index in range(len(items)):
                    ensure(index)
                    ensure(index + 1, ahead=True)
                    source = await resolving[index]
                    if source is not None:
                        await self._play_source(source, items[index])
        finally:
            for task in resolving:  # a synthesis resolved but not (fully) played: let it go
                source = task.result() if task.done() and not task.cancelled() and not task.exception() else None
                if isinstance(source, Subscription):
                    source.close()

    async def _play_source(self, source: list[bytes] | Subscription | AnswerStream, item: Item) -> None:
        if isinstance(source, list):
            await self.speaker.frames(source)
            return
        if isinstance(source, AnswerStream):
            await self.answers.play(source)
            return
        synthesis = source.synthesis
        if not synthesis.first_audio.is_set() and self.filler_after_s > 0:
            try:
                async with asyncio.timeout(self.filler_after_s):
                    await synthesis.first_audio.wait()
            except TimeoutError:
                await self.speaker.filler()
        try:
            await self.speaker.stream(source.frames())
        except (asyncio.CancelledError, CallEnded):
            raise  # a hang-up is not a failed synthesis: no warning, no fallback
        except Exception as exc:
            self.log.warning("tts_item_failed", kind=item.kind, error=str(exc), error_type=type(exc).__name__)
            await self.speaker.fallback()

    async def _resolve(self, item: Item, group: asyncio.TaskGroup) -> Source:
        """What an item sounds like: cached frames, a synthesis in progress, an answer, or None to skip it."""
        if item.kind == "static":
            frames = await self.fragments.get_audio_chunks(static_key(item.value))
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
            prompt = await self.variables.render(item.value)
            return self.answers.ask(prompt, group) if prompt else None
        else:
            self.log.warning("item_kind_unsupported", kind=item.kind)
            return None
        text = await self.variables.render(template)
        return await self._speech_for(text) if text else None

    async def _speech_for(self, text: str) -> Source:
        key = tts_key(text, self.synthesis.profile)
        frames = await self.fragments.get_audio_chunks(key)
        self.metrics.cache_lookups.labels(kind="tts", result="hit" if frames else "miss").inc()
        if frames:
            return frames
        return self.synthesis.hub.open(key, text, self.synthesis.voice)
