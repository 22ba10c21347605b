"""One LLM answer read in the background into phrases that several speakers can read from any index.

The speakers are the WebSocket turn, its retry from the first phrase not certainly heard, and the HTTP
fallback (`bridge.answers`). The reading task is not created here: its owner starts `read(...)` in the
task group of the playlist that plays the answer, so a barge-in or hang-up ends it with the playlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from voice.llm.phrases import PhraseGrouper
from voice.llm.source import LLMError
from voice.tasks import cancel_and_wait

__all__ = ["AnswerStream", "closing_stream"]


@contextlib.asynccontextmanager
async def closing_stream(source: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """`source`, closed (`aclose()`, which ends an HTTP request) when the block is left, if it can be."""
    try:
        yield source
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


class AnswerStream:
    """One LLM answer: its pieces read by a background task (`read`) and grouped into `phrases`, which any
    number of speakers read from any index (`wait`), so a retry or a fallback can start mid-answer.

    `ended` is set when the source is exhausted or failed (`error` says why); `sent` is how many phrases
    have been handed to speech so far (what the caller may have heard), kept by the speakers.
    """

    def __init__(self, prompt: str = "", grouper: PhraseGrouper | None = None) -> None:
        self.prompt = prompt
        self.phrases: list[str] = []
        self.ended = False
        self.error: BaseException | None = None
        self.sent = 0
        self.pieces = 0
        self.first_piece_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        """The task running `read`, when its owner recorded it (so `aclose` can end it)."""
        self._grouper = grouper or PhraseGrouper()
        self._changed = asyncio.Event()

    async def read(self, source: AsyncIterator[str]) -> None:
        """Read `source` to its end (the task's body). Failures end the answer and are kept in `error`."""
        try:
            async with closing_stream(source) as pieces:
                async for piece in pieces:
                    if not isinstance(piece, str):
                        raise LLMError(f"the text source yielded {type(piece).__name__}, expected str")
                    if self.first_piece_at is None:
                        self.first_piece_at = time.monotonic()
                    self.pieces += 1
                    self._add(self._grouper.feed(piece))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
        finally:
            tail = self._grouper.flush()
            self._add([tail] if tail else [])
            self.ended = True
            self._notify()

    async def wait(self, index: int) -> bool:
        """Wait until phrase `index` exists (True) or the answer has ended without it (False)."""
        while len(self.phrases) <= index and not self.ended:
            await self._changed.wait()
        return len(self.phrases) > index

    def text(self, start: int = 0, end: int | None = None) -> str:
        """The phrases `start:end` as one text (single spaces, no trailing space)."""
        return "".join(self.phrases[start:end]).strip()

    async def aclose(self) -> None:
        """Stop reading and wait until the source is closed (its HTTP request ended)."""
        if self.task is not None:
            await cancel_and_wait(self.task)

    def _add(self, phrases: list[str]) -> None:
        if phrases:
            self.phrases.extend(phrases)
            self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()
