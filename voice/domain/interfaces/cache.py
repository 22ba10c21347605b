"""`AbstractCache`: what the rest of the system may ask of the voice cache (spec: cache.ru.md).

The bridge and the LLM side depend on this interface, never on Redis. Every implementation promises to
*degrade, not fail*: when its store is down or slow, the methods log and return the empty value (None,
False) so a call goes on with live synthesis. Errors are raised only for bad arguments and bad files,
which are the caller's mistakes, never the store's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadedAudio:
    """What `load_and_set_audio` did with one file (the loader prints it)."""

    key: str
    path: str
    chunks: int
    duration_s: float
    source_format: str
    stored: bool  # False when the write failed (the store is down); the file itself was fine
    level_dbfs: float | None = None  # active speech level as read (None: silent, or not measured)
    gain_db: float = 0.0  # gain applied to reach AUDIO_TARGET_DBFS (0 with AUDIO_NORMALIZE=false)


class AbstractCache(ABC):
    """Audio fragments (lists of ready-to-send byte chunks) and short texts, by key (see `voice.keys`)."""

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection pool. With the store down: log and return; later calls retry by themselves."""

    @abstractmethod
    async def close(self) -> None:
        """Close the pool. Safe to call twice."""

    @abstractmethod
    async def load_and_set_audio(self, key: str, wav_filepath: str, chunk_size_ms: int = 20) -> LoadedAudio:
        """Read a PCM WAV file (off the event loop), convert it to 8 kHz mono s16le, cut it in
        `chunk_size_ms` chunks (the last padded with silence) and store them with `set_audio_chunks`.

        Raises `voice.audio.AudioFormatError` naming the file and the problem (missing, not WAV,
        compressed, empty). A store failure is not raised: it is logged and `stored` is False.
        """

    @abstractmethod
    async def set_audio_chunks(
        self, key: str, audio_chunks: list[bytes], *, ttl_seconds: int | None = None
    ) -> bool:
        """Replace the audio under `key` atomically: a reader sees the old list or the new one, never a mix.

        `ttl_seconds=None` applies the policy of the key's kind (`tts:` keys expire after the configured
        TTS TTL, other keys never); a positive number sets that expiry. An empty list, a chunk that is not
        bytes or a non-positive TTL raise ValueError/TypeError. Returns False when the store failed.
        """

    @abstractmethod
    async def get_audio_chunks(self, key: str) -> list[bytes] | None:
        """The whole list of chunks under `key`, as bytes; None when missing or on a store failure."""

    @abstractmethod
    async def set_text(self, key: str, text: str, ttl_seconds: int) -> bool:
        """Store a UTF-8 text with a mandatory TTL (a non-positive TTL raises ValueError).

        Returns False when the store failed.
        """

    @abstractmethod
    async def get_text(self, key: str) -> str | None:
        """The text under `key`; None when missing, not UTF-8, or on a store failure."""
