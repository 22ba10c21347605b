"""The narrow interfaces between the rooms of the call path (Protocols: any object with these members fits).

- `AudioSink`: where a call's outbound speech goes (the call's short frame queue, drained by the clock);
- `CallLine`: what the dialogue needs from a call: the sink, the caller's events, identity, hanging up;
- `CallVoice`: what the rooms need from a call's TTS chain (`voice.tts_manager.TTSManager`).

`bridge.call.Call` implements `CallLine`; tests and tools may pass anything else that does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from bridge.call import DtmfEvent, HangupEvent
from voice.audio import Loudness
from voice.config import TTSConfig

__all__ = ["AudioSink", "CallLine", "CallVoice", "Logger"]


class Logger(Protocol):
    """A structlog logger bound to the call (its events are snake_case, values are fields)."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...
    def exception(self, event: str, **kw: Any) -> Any: ...


class AudioSink(Protocol):
    """A call's outbound audio: 20 ms 8 kHz slin frames, queued a few frames ahead of the media clock."""

    async def play(self, frame: bytes) -> None:
        """Queue one frame (a short last frame is padded); waits while the queue is full."""

    async def play_frames(self, frames: Iterable[bytes]) -> int:
        """Queue frames in order as the clock makes room; how many were queued."""

    def clear_audio(self) -> int:
        """Drop what is queued (barge-in); how many frames were dropped."""

    async def drained(self) -> None:
        """Return once everything queued has been written."""


class CallLine(AudioSink, Protocol):
    """One call as the dialogue sees it. Playing after the hang-up raises `bridge.call.CallEnded`."""

    uuid: uuid.UUID | None
    log: Logger
    events: asyncio.Queue[DtmfEvent | HangupEvent]
    on_audio: Callable[[bytes, int], None] | None

    @property
    def ended(self) -> bool: ...

    async def hangup(self, reason: str = "server") -> None: ...


class CallVoice(Protocol):
    """A call's TTS chain: HTTP synthesis of known text, and turns on the hot WebSocket for streamed text."""

    config: TTSConfig

    def stream_static_text(self, text: str) -> AsyncIterator[bytes]: ...

    def stream_static_frames(self, text: str, *, loudness: Loudness | None = None) -> AsyncIterator[bytes]: ...

    async def start_llm_stream(self) -> tuple[asyncio.Queue[Any], asyncio.Queue[Any]]: ...

    async def stop_llm_stream(self) -> None: ...
