"""`Speaker`: a dialogue's voice on one call: frames to the call's queue, fillers, the fallback phrase.

Shared by the playlist and the answer speaker so that there is one count of frames queued (the dialogue's
spin guard reads it) and one filler rotation per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from bridge.interfaces import AudioSink, Logger
from bridge.ops.metrics import Metrics
from voice.keys import static_key

__all__ = ["FALLBACK_FRAGMENT", "FragmentReader", "Speaker"]

FALLBACK_FRAGMENT = "fallback"
"""The fragment played when a synthesis or an answer fails before saying anything."""


class FragmentReader(Protocol):
    async def get_audio_chunks(self, key: str) -> list[bytes] | None: ...


class Speaker:
    def __init__(self, sink: AudioSink, fragments: FragmentReader, filler_names: Sequence[str],
                 metrics: Metrics, log: Logger) -> None:
        self.sink = sink
        self.fragments = fragments
        self.filler_names = tuple(filler_names)
        self.metrics = metrics
        self.log = log
        self.frames_queued = 0
        """Frames handed to the call so far (the dialogue's spin guard compares it between nodes)."""
        self._filler_turn = 0
        self.on_next_audio: Callable[[], None] | None = None
        """Called once, when the next frame is queued (`bridge.listening.TurnLatency` times answers so)."""

    def _first_audio(self) -> None:
        callback, self.on_next_audio = self.on_next_audio, None
        if callback is not None:
            callback()

    async def frames(self, frames: list[bytes]) -> int:
        """Queue a list of frames (a cached fragment: played as one run); how many."""
        self.frames_queued += len(frames)
        if self.on_next_audio is not None and frames:
            self._first_audio()
        await self.sink.play_frames(frames)
        return len(frames)

    async def stream(self, frames: AsyncIterator[bytes]) -> None:
        """Queue frames as they come (a synthesis), closing the source when done or interrupted."""
        try:
            async for frame in frames:
                self.frames_queued += 1
                if self.on_next_audio is not None:
                    self._first_audio()
                await self.sink.play(frame)
        finally:
            close = getattr(frames, "aclose", None)  # ends the HTTP request / lets the synthesis go
            if close is not None:
                await close()

    async def filler(self) -> None:
        """The next filler fragment of the rotation ("так...", "ага..."), if it is in the cache."""
        if not self.filler_names:
            return
        name = self.filler_names[self._filler_turn % len(self.filler_names)]
        self._filler_turn += 1
        frames = await self.fragments.get_audio_chunks(static_key(name))
        if frames:
            self.metrics.fillers.inc()
            self.log.info("filler", fragment=name)
            await self.frames(frames)

    async def fallback(self) -> None:
        """The fallback phrase: what the caller hears instead of silence when speech failed."""
        frames = await self.fragments.get_audio_chunks(static_key(FALLBACK_FRAGMENT))
        if frames:
            await self.frames(frames)
        else:
            self.log.warning("fragment_missing", fragment=FALLBACK_FRAGMENT)
