"""Shared, cached syntheses: every text is paid for once per process, and once ever while Redis keeps it.

A cache miss starts a `Synthesis`: one HTTP stream from the TTS service, converted to 8 kHz frames as the
chunks arrive. Any number of listeners (calls that missed the same key at the same time) read the growing
frame list, each from its own position, so the first listener hears audio as soon as the first frame
exists. The synthesis belongs to the process, not to a call: it outlives a listener that hangs up, and is
cancelled only when its last listener leaves before it finished (a hang-up or barge-in of every caller), in
which case nothing is cached. A synthesis that completes is written to the cache in the background; the
`SynthesisHub` keeps those writes referenced and awaits them on shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

import structlog

from voice.audio import FrameStream, Loudness
from voice.domain.interfaces.cache import AbstractCache

log = structlog.get_logger(__name__)


class TextToSpeech(Protocol):
    """What a synthesis needs of a TTS manager: raw provider audio chunks for a text."""

    def stream_static_text(self, text: str) -> AsyncIterator[bytes]: ...


class SynthesisObserver(Protocol):
    """Hooks for metrics; the bridge passes its own, tests may pass none."""

    def on_request(self) -> None: ...
    def on_first_audio(self, seconds: float) -> None: ...
    def on_error(self, error: BaseException) -> None: ...


class Synthesis:
    """One text being synthesized: a growing list of frames plus completion state."""

    def __init__(self, key: str, text: str) -> None:
        self.key = key
        self.text = text
        self.frames: list[bytes] = []
        self.done = False
        self.error: BaseException | None = None
        self.first_audio = asyncio.Event()  # set with the first frame, or when it ended without one
        self.listeners = 0
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    def _append(self, frames: list[bytes]) -> None:
        if frames:
            self.frames.extend(frames)
            self.first_audio.set()
            self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if error is None:
            self.done = True
        else:
            self.error = error
        self.first_audio.set()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def subscribe(self) -> Subscription:
        """A listener's handle. Subscribing counts at once, so a prefetched synthesis is not orphaned."""
        self.listeners += 1
        return Subscription(self)

    def _unsubscribe(self) -> None:
        self.listeners -= 1
        if self.listeners == 0 and not self.finished and self.task is not None:
            self.task.cancel()


class Subscription:
    """One listener's position in a synthesis. `close()` (or leaving `frames()`) lets it go."""

    def __init__(self, synthesis: Synthesis) -> None:
        self.synthesis = synthesis
        self._closed = False

    async def frames(self) -> AsyncIterator[bytes]:
        """Frames from the start, as they become available; raises the synthesis's error if it failed."""
        s = self.synthesis
        position = 0
        try:
            while True:
                while position < len(s.frames):
                    yield s.frames[position]
                    position += 1
                if s.done:
                    return
                if s.error is not None:
                    raise s.error
                await s._changed.wait()
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.synthesis._unsubscribe()


class SynthesisHub:
    """Process-wide registry of syntheses in flight, keyed by cache key, and of their cache writes."""

    def __init__(
        self,
        cache: AbstractCache,
        *,
        output_format: str,
        ttl_seconds: int | None,
        observer: SynthesisObserver | None = None,
        target_dbfs: float | None = None,
    ) -> None:
        """`target_dbfs`: the level every synthesis is brought to as it streams (the one fragments are stored
        at, `AUDIO_TARGET_DBFS`), so a sentence of a recorded and a synthesized part has one loudness; None
        leaves the provider's level."""
        self.cache = cache
        self.output_format = output_format
        self.loudness = Loudness(target_dbfs) if target_dbfs is not None else None
        self.ttl_seconds = ttl_seconds
        self.observer = observer
        self.in_flight: dict[str, Synthesis] = {}
        self.background: set[asyncio.Task[Any]] = set()

    def open(self, key: str, text: str, tts: TextToSpeech) -> Subscription:
        """Subscribe to the synthesis of `text` under `key`: the one in flight, or a new one using `tts`."""
        synthesis = self.in_flight.get(key)
        if synthesis is not None and not synthesis.finished:
            return synthesis.subscribe()
        synthesis = Synthesis(key, text)
        self.in_flight[key] = synthesis
        synthesis.task = asyncio.get_running_loop().create_task(
            self._run(synthesis, tts), name=f"synthesis {key}"
        )
        return synthesis.subscribe()

    async def _run(self, synthesis: Synthesis, tts: TextToSpeech) -> None:
        """Stream, convert, publish; cache only a synthesis that completed (retries are the TTS client's)."""
        try:
            await self._stream(synthesis, tts)
        except asyncio.CancelledError:
            log.info("synthesis_abandoned", key=synthesis.key, frames=len(synthesis.frames))
            synthesis._finish(asyncio.CancelledError())
            raise
        except Exception as exc:  # any TTS or conversion failure ends this synthesis only
            log.warning("synthesis_failed", key=synthesis.key, error=str(exc), error_type=type(exc).__name__)
            if self.observer:
                self.observer.on_error(exc)
            synthesis._finish(exc)
        else:
            synthesis._finish()
            self.spawn(self.cache.set_audio_chunks(synthesis.key, synthesis.frames, ttl_seconds=self.ttl_seconds),
                       name=f"cache write {synthesis.key}")
        finally:
            if self.in_flight.get(synthesis.key) is synthesis:
                del self.in_flight[synthesis.key]

    async def _stream(self, synthesis: Synthesis, tts: TextToSpeech) -> None:
        frames = FrameStream(self.output_format, loudness=self.loudness)
        started = time.monotonic()
        if self.observer:
            self.observer.on_request()
        first = True
        async for chunk in tts.stream_static_text(synthesis.text):
            if first and chunk:
                first = False
                if self.observer:
                    self.observer.on_first_audio(time.monotonic() - started)
            synthesis._append(frames.feed(chunk))
        synthesis._append(frames.flush())
        if frames.leveller is not None:
            log.debug("synthesis_levelled", key=synthesis.key, gain_db=frames.leveller.gain_db)
        if not synthesis.frames:
            raise ValueError(f"TTS returned no audio for {synthesis.text!r}")

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run work that must outlive a call (a cache write), keep it referenced, forget it when done."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for background cache writes (on shutdown), so that nothing is lost half-written."""
        if self.background:
            await asyncio.wait(list(self.background), timeout=timeout)

