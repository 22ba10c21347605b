"""What the bridge needs from an LLM: `TextSource`, the messages it takes, and the error it raises.

Any LLM plugs in by implementing `TextSource.stream`; `voice.llm.openai_compat.OpenAICompatibleSource` is
the shipped implementation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol, runtime_checkable

__all__ = ["ChatMessage", "LLMError", "TextSource"]


@dataclasses.dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@runtime_checkable
class TextSource(Protocol):
    """Where LLM text comes from. `stream` yields the answer to `prompt` piece by piece, as it is produced.

    `history` is the conversation before the prompt (a summary as a system message, earlier prompts as
    user messages, answers as assistant messages, the caller's choices as user messages). Failures raise
    `LLMError` (possibly after some pieces). Closing the iterator (`aclose()`) must end the request.
    """

    def stream(self, prompt: str, history: Sequence[ChatMessage]) -> AsyncIterator[str]: ...


class LLMError(Exception):
    """The LLM gave no answer, or stopped mid-answer. `status` is the HTTP status when there was one,
    `pieces` how many pieces had been yielded before the failure."""

    def __init__(self, message: str, *, status: int | None = None, pieces: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.pieces = pieces
