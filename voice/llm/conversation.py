"""A call's conversation memory for the LLM: what the bot was asked to say, what it said, what the caller chose.

One `ConversationManager` (the cache specification's `llm.ConversationManager`) per call whose dialogue
has `llm` items. Every LLM request gets `messages()`: a summary of the older part (a system message) and
the recent turns word for word. When the turns grow past `memory_chars`, all but the last `KEEP_RECENT` are
summarised by the LLM, in the background (an answer never waits for a summary; until it is ready the turns
are sent in full).

The summary is cached exactly as the cache specification's "summarization caching" flow says: before the
LLM is asked, `cache.get_text(<session key>)`; the LLM only on a miss; then
`cache.set_text(<session key>, summary, ttl)`. The session key is `voice.keys.summary_key(...)` of the
session (the call's UUID) and a digest of exactly what is summarised (the previous summary and the turns
folded into it), so a cached summary is only ever reused for the same conversation: a call that comes
back with the same UUID (a reconnect, a retry of the dialplan) reads it from Redis instead of paying the
LLM again, and a different conversation can never pick up a summary that is not its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from typing import Literal

import structlog

from voice.domain.interfaces.cache import AbstractCache
from voice.keys import summary_key
from voice.llm.answer_stream import closing_stream
from voice.llm.source import ChatMessage, TextSource
from voice.tasks import cancel_and_wait

__all__ = ["ConversationManager", "Turn", "KEEP_RECENT", "SUMMARY_INSTRUCTION"]

KEEP_RECENT = 2
"""Turns kept word for word when the older ones are summarised (the last exchange)."""

SUMMARY_INSTRUCTION = (
    "Summarise this telephone conversation between a voice bot and a caller, for the bot's own memory: "
    "what the caller was told, what the caller chose, what is still open. Plain text, at most 80 words."
)


@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    """One entry of the memory. `prompt`: what the dialogue asked the bot to say; `answer`: what the bot
    said (`interrupted` when the caller cut it short); `choice`: a DTMF digit that moved the dialogue."""

    kind: Literal["prompt", "answer", "choice"]
    text: str

    def message(self) -> ChatMessage:
        return ChatMessage("assistant" if self.kind == "answer" else "user", self.text)

    def transcript_line(self) -> str:
        label = {"prompt": "Bot was asked", "answer": "Bot said", "choice": "Caller"}[self.kind]
        return f"{label}: {self.text}"


class ConversationManager:
    """Memory of one call. Not thread-safe; lives on the call's event loop.

    Its summary task is its own (not a call task): `aclose()` at the end of the call stops it.
    """

    def __init__(
        self,
        session: str,
        source: TextSource,
        cache: AbstractCache,
        *,
        memory_chars: int,
        summary_ttl_s: int,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        summary_key(session)  # a bad session id fails here, not in the middle of a call
        self.session = session
        self.source = source
        self.cache = cache
        self.memory_chars = memory_chars
        self.summary_ttl_s = summary_ttl_s
        self.log = log or structlog.get_logger(__name__)
        self.summary: str | None = None
        self.turns: list[Turn] = []
        self.summaries_computed = 0
        self.summaries_from_cache = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- recording --------------------------------------------------------------------------------------

    def add_exchange(self, prompt: str, answer: str, *, interrupted: bool = False) -> None:
        """An LLM item was played: its prompt and the answer the caller heard (nothing when it is empty)."""
        answer = answer.strip()
        if not answer:
            return
        if interrupted:
            answer += " [the caller interrupted here]"
        self.turns += [Turn("prompt", prompt.strip()), Turn("answer", answer)]
        self._maybe_summarize()

    def add_choice(self, node: str, digit: str) -> None:
        """The caller pressed `digit` in the menu of `node`, and the dialogue followed it."""
        self.turns.append(Turn("choice", f"pressed {digit} in the menu of {node!r}"))
        self._maybe_summarize()

    # --- reading ----------------------------------------------------------------------------------------

    @property
    def chars(self) -> int:
        """Characters of the turns kept word for word."""
        return sum(len(turn.text) for turn in self.turns)

    def messages(self) -> list[ChatMessage]:
        """The conversation so far, as the history of the next LLM request."""
        out = [ChatMessage("system", f"Summary of the call so far: {self.summary}")] if self.summary else []
        return out + [turn.message() for turn in self.turns]

    async def settle(self) -> None:
        """Wait for a summary in progress (tests, benchmarks)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def aclose(self) -> None:
        """End of the call: stop a summary in progress (nothing is cached for it)."""
        self._closed = True
        task, self._task = self._task, None
        await cancel_and_wait(task)

    # --- summarising ------------------------------------------------------------------------------------

    def _maybe_summarize(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return  # the running summary re-checks when it is done
        if self.chars <= self.memory_chars or len(self.turns) <= KEEP_RECENT:
            return
        fold = len(self.turns) - KEEP_RECENT
        self._task = asyncio.get_running_loop().create_task(self._summarize(fold),
                                                             name=f"llm summary {self.session}")

    async def _summarize(self, fold: int) -> None:
        folded = self.turns[:fold]
        prior = self.summary
        key = summary_key(f"{self.session}:{_digest(prior, folded)}")
        try:
            summary = await self.cache.get_text(key)
            if summary is not None:
                self.summaries_from_cache += 1
                self.log.info("llm_summary_cached", key=key, turns=fold)
            else:
                summary = await self._ask(prior, folded)
                self.summaries_computed += 1
                await self.cache.set_text(key, summary, self.summary_ttl_s)
                self.log.info("llm_summary_computed", key=key, turns=fold, chars=len(summary))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the LLM failed: forget the oldest turns rather than grow without bound
            self.log.warning("llm_summary_failed", error=str(exc), error_type=type(exc).__name__,
                             turns_forgotten=fold)
            summary = prior
        del self.turns[:fold]  # turns are only appended, so the first `fold` are still the folded ones
        self.summary = summary
        self._task = None
        self._maybe_summarize()  # turns added meanwhile may call for another round

    async def _ask(self, prior: str | None, folded: list[Turn]) -> str:
        lines = [f"Earlier summary: {prior}"] if prior else []
        lines += [turn.transcript_line() for turn in folded]
        prompt = SUMMARY_INSTRUCTION + "\n\n" + "\n".join(lines)
        async with closing_stream(self.source.stream(prompt, [])) as stream:
            pieces = [piece async for piece in stream]
        summary = " ".join("".join(pieces).split())
        if not summary:
            raise ValueError("the LLM returned an empty summary")
        return summary


def _digest(prior: str | None, folded: list[Turn]) -> str:
    material = json.dumps([prior, [[t.kind, t.text] for t in folded]], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]
