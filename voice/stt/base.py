"""The per-call recognizer interface, and the part every implementation shares (VAD, endpointing, events).

A recognizer lives as long as its call, as the TTS chain does: created when the call starts (`start()`),
fed every inbound 20 ms frame from the call's receive path (`feed()`: synchronous and cheap, it never waits on
the network), read as an async iterator of typed events (`events()`), and closed at hang-up (`close()`), which
leaves no task or socket behind. A fatal service error is raised by the iterator, as a typed `STTError`;
after it the recognizer ignores further frames, and the call goes on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol, Self, runtime_checkable

import structlog

from voice.stt.config import STTConfig
from voice.stt.endpointer import (
    BargeIn,
    Endpointer,
    EndpointerConfig,
    SpeechStart,
    UtteranceEnd,
)
from voice.stt.errors import STTError
from voice.stt.events import (
    BargeInDetected,
    FinalTranscript,
    PartialTranscript,
    RecognizerEvent,
    SpeechStarted,
    UtteranceEnded,
)
from voice.stt.vad import VoiceActivityDetector, check_format

__all__ = ["RecognizerBase", "SpeechRecognizer", "endpointer_config", "voice_activity_detector"]

log = structlog.get_logger(__name__)


@runtime_checkable
class SpeechRecognizer(Protocol):
    """One call's speech recognizer."""

    audio_format: str
    """`pcm_8000`, `pcm_16000` or `ulaw_8000`: what AudioSocket delivers, sent as it is."""

    async def start(self) -> None:
        """Connect (or get ready); raises a typed STTError when the service cannot be had."""
        ...

    def feed(self, frame: bytes, voiced: bool | None = None) -> None:
        """One 20 ms inbound frame in `audio_format`. Never blocks; ignored after close or failure.
        `voiced`: the frame's VAD decision when the caller already has it (the bridge classifies each
        inbound frame once for the recognizer and the barge-in detector); None: the recognizer's own VAD."""
        ...

    def commit(self) -> None:
        """End the current utterance now (the dialogue ended the caller's turn)."""
        ...

    def events(self) -> AsyncIterator[RecognizerEvent]:
        """Endpointing decisions and transcripts in order; ends after close, raises STTError on failure."""
        ...

    async def close(self) -> None:
        """Stop everything (idempotent): no task, socket or request left running."""
        ...


def voice_activity_detector(config: STTConfig, audio_format: str = "pcm_8000") -> VoiceActivityDetector:
    """A call's VAD as the settings tune it (`STT_VAD_AGGRESSIVENESS`, `STT_VAD_MIN_RMS`)."""
    return VoiceActivityDetector(audio_format, aggressiveness=config.stt_vad_aggressiveness,
                                 min_rms=config.stt_vad_min_rms)


def endpointer_config(config: STTConfig) -> EndpointerConfig:
    return EndpointerConfig.from_ms(
        start_ms=config.stt_start_ms,
        barge_in_ms=config.stt_barge_in_ms,
        end_silence_ms=config.stt_end_silence_ms,
        max_utterance_s=config.stt_max_utterance_s,
    )


_END = object()


class RecognizerBase:
    """VAD + endpointer + the event queue; subclasses add the service (`_on_frame`, `_on_end`, `_stop`)."""

    provider = "none"

    def __init__(self, config: STTConfig, audio_format: str) -> None:
        check_format(audio_format)
        self.config = config
        self.audio_format = audio_format
        self.vad = voice_activity_detector(config, audio_format)
        """Used only for frames fed without a decision (`feed(frame)`)."""
        self.endpointer = Endpointer(endpointer_config(config))
        self.utterance = 0
        self.closed = False
        self.failed: STTError | None = None
        self._queue: asyncio.Queue[RecognizerEvent | STTError | object] = asyncio.Queue()

    # --- the call's side ----------------------------------------------------------------------------------

    def feed(self, frame: bytes, voiced: bool | None = None) -> None:
        if self.closed or self.failed is not None:
            return
        if voiced is None:
            voiced = self.vad.is_speech(frame)
        for decision in self.endpointer.update(voiced):
            self._decide(decision)
        self._on_frame(frame)

    def commit(self) -> None:
        if self.closed or self.failed is not None:
            return
        end = self.endpointer.cut()
        if end is not None:
            self._decide(end, reason="commit")
        else:
            self._on_commit_idle()

    async def events(self) -> AsyncIterator[RecognizerEvent]:
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # a second reader ends too
                return
            if isinstance(item, STTError):
                raise item
            yield item  # type: ignore[misc]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._stop()
        finally:
            self._queue.put_nowait(_END)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- for subclasses -----------------------------------------------------------------------------------

    def _emit(self, event: RecognizerEvent) -> None:
        if not self.closed:
            self._queue.put_nowait(event)

    def _fail(self, error: STTError) -> None:
        """A fatal error: reported once through `events()`, then frames are ignored."""
        if self.failed is not None or self.closed:
            return
        self.failed = error
        log.warning("stt_failed", provider=self.provider, error=type(error).__name__, code=error.code,
                    http_status=error.http_status, close_code=error.close_code, message=error.message)
        self._queue.put_nowait(error)

    def _decide(self, decision: SpeechStart | BargeIn | UtteranceEnd, reason: str | None = None) -> None:
        if isinstance(decision, SpeechStart):
            self.utterance += 1
            self._emit(SpeechStarted(self.utterance, decision.frame))
            self._on_start(decision)
        elif isinstance(decision, BargeIn):
            self._emit(BargeInDetected(self.utterance, decision.frame))
        else:
            why = reason if reason and decision.reason != "blip" else decision.reason
            self._emit(UtteranceEnded(self.utterance, decision.frame, why))  # type: ignore[arg-type]
            self._on_end(decision)

    def _partial(self, text: str) -> None:
        self._emit(PartialTranscript(self.utterance, text))

    def _final(self, utterance: int, text: str) -> None:
        log.debug("stt_final", provider=self.provider, utterance=utterance, chars=len(text))
        self._emit(FinalTranscript(utterance, text))

    def _on_frame(self, frame: bytes) -> None:
        """Every frame, after the endpointing decisions it caused."""

    def _on_start(self, start: SpeechStart) -> None:
        """An utterance started."""

    def _on_end(self, end: UtteranceEnd) -> None:
        """An utterance ended (a `blip` included: the subclass decides what to do with it)."""

    def _on_commit_idle(self) -> None:
        """`commit()` while no utterance was in progress."""

    async def _stop(self) -> None:
        """Close the service's side."""
