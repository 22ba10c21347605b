"""`FragmentMemo`: static fragments kept in process memory for a few seconds, in front of the cache.

Why: every call of a dialogue plays the same few pre-recorded fragments, and without a memo each call
reads each of them from Redis (one LRANGE of up to a few hundred 320-byte chunks) and holds its own copy
while it plays. With a thousand calls that is thousands of reads a second and a megabyte-sized list per
fragment per call; with the memo it is one read per fragment per `STATIC_MEMO_TTL` seconds, and every call
plays the same list object (no copy per call).

Freshness: `voice-bridge load-audio` can replace a fragment while the bridge runs. An entry is used for at
most `ttl_s` seconds after it was read; the first lookup after that reads Redis again (lookups arriving
meanwhile share that one read). So new audio is heard by calls that reach the fragment `ttl_s` seconds after
the load at the latest. `ttl_s = 0` turns the memo off (every lookup reads Redis).

Framing: fragments are stored in chunks of any `chunk_size_ms` (`load-audio --chunk-ms`), but a call plays
20 ms frames; a fragment read here is re-framed to 20 ms once per read (`voice.audio.reframe`; a 20 ms
fragment is passed as it is), so every chunk size plays sample for sample the same.

Degrading: when the re-read fails because Redis is down (the cache reports a failure or its breaker is
open), the old entry keeps being played rather than dropping to live synthesis; a fragment that is gone
from a healthy Redis is gone from the memo too. Only `static:` keys are kept: TTS keys are per text and
would grow without bound. Everything else is passed to the wrapped cache unchanged.

The lists handed out are shared between calls: callers must not modify them (the orchestrator only reads).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from voice.audio import reframe
from voice.domain.interfaces.cache import AbstractCache, LoadedAudio
from voice.keys import STATIC_PREFIX

__all__ = ["FragmentMemo"]

log = structlog.get_logger(__name__)


class FragmentMemo(AbstractCache):
    """An `AbstractCache` that serves `static:` audio from memory for `ttl_s` seconds after each read."""

    def __init__(self, cache: AbstractCache, ttl_s: float, *, max_entries: int = 1024) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self.cache = cache
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, list[bytes]]] = {}
        """key -> (monotonic time it was read, the chunks)"""
        self._reads: dict[str, asyncio.Future[list[bytes] | None]] = {}
        self.hits = 0
        self.reads = 0
        self.stale_served = 0

    def __getattr__(self, name: str) -> Any:
        # ping(), available, config, failures ... of the wrapped cache (health checks, the breaker state)
        if name == "cache":  # not set yet (e.g. during copying): no recursion
            raise AttributeError(name)
        return getattr(self.cache, name)

    # --- the memo ---------------------------------------------------------------------------------------

    async def get_audio_chunks(self, key: str) -> list[bytes] | None:
        if not key.startswith(STATIC_PREFIX):
            return await self.cache.get_audio_chunks(key)
        if not self.ttl_s:
            chunks = await self.cache.get_audio_chunks(key)
            return reframe(chunks) if chunks else chunks
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < self.ttl_s:
            self.hits += 1
            return entry[1]
        read = self._reads.get(key)
        if read is None:
            read = asyncio.ensure_future(self._read(key))
            self._reads[key] = read
            read.add_done_callback(lambda _: self._reads.pop(key, None))
        # shielded: a call that hangs up mid-read does not cancel the read the others are waiting for
        return await asyncio.shield(read)

    async def _read(self, key: str) -> list[bytes] | None:
        failures = getattr(self.cache, "failures", 0)
        self.reads += 1
        chunks = await self.cache.get_audio_chunks(key)
        old = self._entries.get(key)
        if chunks:
            chunks = reframe(chunks)
            self._store(key, chunks)
            return chunks
        if old is not None and self._store_failed(failures):
            self.stale_served += 1
            log.info("fragment_memo_stale", key=key, age_s=round(time.monotonic() - old[0], 1))
            return old[1]  # Redis is down: the last good copy beats live synthesis
        self._entries.pop(key, None)
        return chunks

    def _store_failed(self, failures_before: int) -> bool:
        return getattr(self.cache, "failures", 0) != failures_before or not getattr(self.cache, "available", True)

    def _store(self, key: str, chunks: list[bytes]) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic(), chunks)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest read

    def forget(self, key: str | None = None) -> None:
        """Drop one entry (or all): the next lookup reads the cache."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    # --- the rest of AbstractCache: passed through (a write through this object refreshes the memo) -----

    async def connect(self) -> None:
        await self.cache.connect()

    async def close(self) -> None:
        await self.cache.close()

    async def load_and_set_audio(self, key: str, wav_filepath: str, chunk_size_ms: int = 20) -> LoadedAudio:
        self.forget(key)
        return await self.cache.load_and_set_audio(key, wav_filepath, chunk_size_ms)

    async def set_audio_chunks(self, key: str, audio_chunks: list[bytes], *,
                               ttl_seconds: int | None = None) -> bool:
        self.forget(key)
        return await self.cache.set_audio_chunks(key, audio_chunks, ttl_seconds=ttl_seconds)

    async def set_text(self, key: str, text: str, ttl_seconds: int) -> bool:
        return await self.cache.set_text(key, text, ttl_seconds)

    async def get_text(self, key: str) -> str | None:
        return await self.cache.get_text(key)
