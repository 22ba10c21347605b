"""Speaking LLM answers: a WebSocket turn on the call's hot socket, retry and resume, the HTTP fallback.

`Answers.ask(prompt, tasks)` sends the prompt with the conversation so far and reads the answer in the
background (a task of the caller's task group: the playlist's, so a barge-in or hang-up ends it);
`Answers.play(answer)` speaks it as its phrases come and remembers it in the call's `ConversationManager`.

A turn that fails after some audio played is resumed from the first phrase the caller has not certainly
heard in full (`voice.llm.phrases_heard`), not from the beginning: a cut phrase is said again whole,
phrases already heard are not. A failure caused by the settings (key, quota, voice, format) is not retried
on the WebSocket. The HTTP fallback speaks what is left, batch by batch as the LLM produces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bridge.call import CallEnded
from bridge.interfaces import CallVoice, Logger
from bridge.ops.metrics import Metrics
from bridge.speaker import Speaker
from voice.audio import FRAME_MS, FrameStream, Loudness
from voice.llm import AnswerStream, ConversationManager, TextSource, phrases_heard
from voice.tasks import task_group
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

__all__ = ["Answers"]

T = TypeVar("T")

# A WebSocket turn that failed with one of these is not retried (the same settings fail again): HTTP next.
_SETTINGS_ERRORS = (TTSAuthError, TTSQuotaError, TTSVoiceNotFoundError, TTSFormatError, TTSValidationError)


class Answers:
    """The LLM answers of one call."""

    def __init__(self, speaker: Speaker, voice: CallVoice, llm: TextSource | None,
                 conversation: ConversationManager | None, *, filler_after_s: float, metrics: Metrics,
                 log: Logger, loudness: Loudness | None = None) -> None:
        self.speaker = speaker
        self.voice = voice
        self.llm = llm
        self.conversation = conversation
        self.filler_after_s = filler_after_s
        self.metrics = metrics
        self.log = log
        self.loudness = loudness
        """The level answers are brought to as they stream (`AUDIO_TARGET_DBFS`), like every synthesis."""

    def ask(self, prompt: str, tasks: asyncio.TaskGroup) -> AnswerStream | None:
        """Send `prompt` with the conversation so far; the answer is read by a task of `tasks`."""
        if self.llm is None:
            self.log.warning("llm_unconfigured", prompt=prompt)
            return None
        history = self.conversation.messages() if self.conversation is not None else []
        answer = AnswerStream(prompt)
        answer.task = tasks.create_task(answer.read(self.llm.stream(prompt, history)), name="llm answer")
        return answer

    async def play(self, answer: AnswerStream) -> None:
        """Speak an answer and remember it (cut short, when a barge-in or hang-up stopped it)."""
        completed = False
        try:
            await self._speak(answer)
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
                await self.speaker.fallback()

    async def _speak(self, answer: AnswerStream) -> None:
        """Over the WebSocket, retried once from the first phrase not heard, then over HTTP."""
        start = 0
        filler = _Filler(self.filler_after_s)
        for attempt in (1, 2):
            try:
                await self._over_websocket(answer, start, filler)
                return
            except _TurnFailed as failed:
                self.metrics.tts_errors.labels(error=type(failed.error).__name__).inc()
                self.log.warning("tts_ws_failed", attempt=attempt, error=str(failed.error),
                                 error_type=type(failed.error).__name__, resume_at_phrase=failed.resume_at,
                                 phrases_sent=failed.sent, audio_s=round(failed.audio_s, 2))
                start = failed.resume_at
                if isinstance(failed.error, _SETTINGS_ERRORS):
                    # a refused key, an exhausted quota, an unknown voice: HTTP would be refused the same way
                    await self.speaker.fallback()
                    return
        await self._over_http(answer, start)

    async def _over_websocket(self, answer: AnswerStream, start: int, filler: _Filler) -> None:
        """One WebSocket turn speaking `answer` from phrase `start`; raises `_TurnFailed` if the turn fails.

        The turn's text feeder is a task of the turn's own group: it ends with the turn, however it ends.
        """
        if not await self._with_filler(answer.wait(start), filler):
            return  # nothing (more) to say
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            text_queue, audio_queue = await self.voice.start_llm_stream()
        except TTSError as exc:
            raise _TurnFailed(exc, resume_at=start, sent=0, audio_s=0.0) from exc
        self.metrics.tts_requests.labels(api="ws").inc()
        frames = FrameStream(self.voice.config.output_format, loudness=self.loudness)
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

        played = 0
        finished = False
        try:
            async with task_group() as turn:
                feeder = turn.create_task(feed(), name="tts ws feed")
                chunk = await self._with_filler(audio_queue.get(), filler)
                filler.cancel()  # the answer is audible now
                if isinstance(chunk, bytes):
                    self.metrics.tts_first_byte.labels(api="ws").observe(loop.time() - started)
                while chunk is not None:
                    if isinstance(chunk, BaseException):
                        played += await self.speaker.frames(frames.flush())
                        raise _TurnFailed.after(chunk, start, sent, played)
                    played += await self.speaker.frames(frames.feed(chunk))
                    chunk = await audio_queue.get()
                played += await self.speaker.frames(frames.flush())
                if not feeder.done():  # the server ended the turn before it had all the text
                    error = TTSStreamError("the WebSocket turn ended before the end of the text")
                    raise _TurnFailed.after(error, start, sent, played)
                finished = True
        finally:
            if not finished:  # barge-in, hang-up or failure: end this turn and its socket now
                await self.voice.stop_llm_stream()

    async def _over_http(self, answer: AnswerStream, start: int) -> None:
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
                await self.speaker.stream(self.voice.stream_static_frames(text, loudness=self.loudness))
            except (asyncio.CancelledError, CallEnded):
                raise  # a hang-up is not a failed synthesis: no warning, no fallback
            except Exception as exc:
                self.metrics.tts_errors.labels(error=type(exc).__name__).inc()
                self.log.warning("tts_item_failed", kind="llm", error=str(exc), error_type=type(exc).__name__)
                await self.speaker.fallback()
                return

    async def _with_filler(self, awaitable: Awaitable[T], filler: _Filler) -> T:
        """Await `awaitable`; if the filler's time comes first, play a filler fragment meanwhile (once)."""
        async with task_group() as group:
            task = group.create_task(_wrap(awaitable))
            delay = filler.remaining()
            if delay is not None and not task.done():
                done, _ = await asyncio.wait([task], timeout=delay)
                if not done:
                    filler.cancel()
                    await self.speaker.filler()
            return await task
        raise AssertionError("unreachable")  # pragma: no cover - the block always returns or raises


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable


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
