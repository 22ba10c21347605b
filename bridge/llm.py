"""LLM answers: where their text comes from (`TextSource`), and how it is shaped for streamed speech.

- `TextSource` is the interface the orchestrator needs from an LLM: an async iterator of text pieces for a
  prompt and the conversation so far. `OpenAICompatibleSource` is the shipped implementation: any
  OpenAI-compatible `/v1/chat/completions` endpoint streamed as server-sent events (`stream: true`) over
  the process's shared httpx client. Another LLM manager plugs in by implementing `stream(...)`.
- `PhraseGrouper` turns token-sized pieces into whole phrases ending in a space: the TTS WebSocket runs
  with `auto_mode=true`, which generates every message as it arrives and wants whole phrases, while the
  first phrase must go out as soon as it is complete so the first audio never waits for the whole answer.
- `AnswerStream` reads one answer in the background into phrases that several speakers can read from any
  index: the WebSocket turn, its retry from the first phrase not certainly heard, the HTTP fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import structlog

from voice.config import ConfigError, LLMConfig

if TYPE_CHECKING:  # httpx and the TTS package load on first use: `bridge.config` imports this module
    import httpx


__all__ = [
    "AnswerStream",
    "ChatMessage",
    "LLMError",
    "OpenAICompatibleSource",
    "PhraseGrouper",
    "TextSource",
    "phrases_heard",
]

log = structlog.get_logger(__name__)

# --- the interface ----------------------------------------------------------------------------------------


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


# --- OpenAI-compatible streaming ------------------------------------------------------------------------


class OpenAICompatibleSource:
    """`POST {LLM_BASE_URL}/chat/completions` with `stream: true`, read as server-sent events.

    Each event's `choices[0].delta.content` is a piece; `data: [DONE]` (or a `finish_reason`) ends the
    answer. A server that ignores `stream` and answers with one JSON completion is accepted too. Requests go
    through the process's shared httpx client (warm keep-alive connections), with per-request timeouts.
    """

    def __init__(self, config: LLMConfig, *, client: httpx.AsyncClient | None = None) -> None:
        if not config.configured:
            raise ConfigError("LLM_BASE_URL", "not set: the LLM client needs an endpoint")
        self.config = config
        self._client = client
        self.url = f"{config.llm_base_url}/chat/completions"

    def messages(self, prompt: str, history: Sequence[ChatMessage]) -> list[dict[str, str]]:
        """The request's messages: system prompt, history, the prompt; consecutive messages of one role are
        merged, since strict chat templates require alternating roles."""
        out: list[dict[str, str]] = []
        for message in (ChatMessage("system", self.config.llm_system_prompt), *history, ChatMessage("user", prompt)):
            if not message.content.strip():
                continue
            if out and out[-1]["role"] == message.role:
                out[-1]["content"] += "\n\n" + message.content
            else:
                out.append({"role": message.role, "content": message.content})
        return out

    def request_body(self, prompt: str, history: Sequence[ChatMessage]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.llm_model, "messages": self.messages(prompt, history),
                                "stream": True}
        if self.config.llm_max_tokens:
            body["max_tokens"] = self.config.llm_max_tokens
        return body

    async def stream(self, prompt: str, history: Sequence[ChatMessage] = ()) -> AsyncIterator[str]:
        import httpx

        from voice.http import shared_http_client

        config = self.config
        headers = {"Accept": "text/event-stream"}
        if config.llm_api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.llm_api_key.get_secret_value()}"
        timeout = httpx.Timeout(connect=config.llm_connect_timeout_s, read=config.llm_read_timeout_s,
                                write=config.llm_read_timeout_s, pool=config.llm_connect_timeout_s)
        client = self._client or shared_http_client()
        pieces = 0
        started = time.monotonic()
        try:
            async with client.stream("POST", self.url, json=self.request_body(prompt, history), headers=headers,
                                     timeout=timeout) as response:
                if response.status_code != 200:
                    raise LLMError(_http_problem(response.status_code, await response.aread()),
                                   status=response.status_code)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    text = _whole_answer(await response.aread())
                    if text:
                        yield text
                    return
                finished = False
                async for data in _sse_data(response.aiter_lines()):
                    if data == "[DONE]":
                        finished = True
                        break
                    piece, done = _delta(data, pieces)
                    if piece:
                        if pieces == 0:
                            log.debug("llm_first_piece", ms=round((time.monotonic() - started) * 1000, 1))
                        pieces += 1
                        yield piece
                    finished = finished or done
                if not finished:
                    raise LLMError("the LLM stream ended without [DONE] or a finish_reason: the answer is cut "
                                   "short", pieces=pieces)
        except httpx.TransportError as exc:
            what = "the LLM stream broke off" if pieces else "no answer from the LLM"
            raise LLMError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "), pieces=pieces) from exc


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined by newlines); comments and other
    fields (`event:`, `id:`, `retry:`) are skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # a last event without its blank line
        yield "\n".join(data)


def _delta(data: str, pieces: int) -> tuple[str, bool]:
    """(content piece, whether a finish_reason came) of one chunk event; LLMError for a malformed one."""
    try:
        event = json.loads(data)
    except json.JSONDecodeError:
        raise LLMError(f"the LLM sent an event that is not JSON: {data[:80]!r}", pieces=pieces) from None
    if not isinstance(event, dict):
        raise LLMError(f"the LLM sent a JSON {type(event).__name__} event, expected an object", pieces=pieces)
    if event.get("error"):
        raise LLMError(f"the LLM reported an error mid-answer: {_error_message(event)}", pieces=pieces)
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise LLMError("the LLM sent `choices` that is not a list", pieces=pieces)
    if not choices:
        return "", False  # e.g. a final usage-only chunk
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise LLMError(f"the LLM sent `delta.content` of type {type(content).__name__}, expected a string",
                       pieces=pieces)
    return content or "", bool(choice.get("finish_reason"))


def _whole_answer(raw: bytes) -> str:
    """The content of a non-streamed completion (a server that ignored `stream: true`)."""
    try:
        body = json.loads(raw)
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LLMError(f"the LLM answered neither an event stream nor a chat completion: {raw[:80]!r}") from None
    if content is not None and not isinstance(content, str):
        raise LLMError("the LLM's message content is not a string")
    return content or ""


def _error_message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    if isinstance(error, str):
        return error
    return str(body)[:200]


def _http_problem(status: int, raw: bytes) -> str:
    try:
        detail = _error_message(json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        detail = raw[:200].decode("utf-8", "replace") or "(empty body)"
    hint = " (check LLM_API_KEY)" if status in (401, 403) else " (check LLM_BASE_URL)" if status == 404 else ""
    return f"the LLM endpoint answered HTTP {status}: {detail}{hint}"


# --- phrases --------------------------------------------------------------------------------------------

# A sentence end, or a clause mark, followed by whitespace: where a phrase may end.
_BOUNDARY = re.compile(r"(?:(?P<sentence>[.!?…]+)|[,;:—–]+)[\"'»”)\]]*\s")
_SPACE = re.compile(r"\s")


class PhraseGrouper:
    """Groups LLM pieces into phrases for `auto_mode` TTS: each a whole phrase ending in a single space.

    A phrase ends at a sentence end followed by whitespace; at a clause mark (`,` `;` `:` dash) followed by
    whitespace when it is at least `min_clause` characters long (any length for the first phrase: the
    first audio comes sooner); and, without punctuation, at the last word boundary once `limit` characters
    (`first_limit` for the first phrase) are buffered. Whitespace inside a phrase is collapsed to one space.
    The phrases' words are exactly the input's words, in order.
    """

    def __init__(self, *, first_limit: int = 30, limit: int = 80, min_clause: int = 12) -> None:
        self.first_limit = first_limit
        self.limit = limit
        self.min_clause = min_clause
        self._buffer = ""
        self._first = True

    def feed(self, piece: str) -> list[str]:
        """The phrases completed by `piece` (often none)."""
        self._buffer += piece
        out: list[str] = []
        while (cut := self._cut()) is not None:
            phrase = _normalise(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            if phrase:
                out.append(phrase)
                self._first = False
        return out

    def flush(self) -> str | None:
        """The rest of the answer as a last phrase (None when nothing is left)."""
        phrase = _normalise(self._buffer)
        self._buffer = ""
        return phrase or None

    def _cut(self) -> int | None:
        buffer = self._buffer
        for match in _BOUNDARY.finditer(buffer):
            if match.group("sentence") or self._first or len(buffer[: match.end()].strip()) >= self.min_clause:
                return match.end()
        if len(buffer) >= (self.first_limit if self._first else self.limit):
            spaces = [m.end() for m in _SPACE.finditer(buffer)]
            words_before = [end for end in spaces if buffer[: end].strip()]
            if words_before:
                return words_before[-1]
        return None


def _normalise(text: str) -> str:
    words = text.split()
    return " ".join(words) + " " if words else ""


SAFE_CHARS_PER_S = 8.0
"""A slow speaking rate (speech runs at 12-17 characters a second). Judging received audio at this rate
underestimates how much text it covers, so a resumed answer may repeat a little but never skips words."""


def phrases_heard(phrases: Sequence[str], audio_s: float, chars_per_s: float = SAFE_CHARS_PER_S) -> int:
    """How many of `phrases` (sent in order on one TTS turn) the caller certainly heard in full, when the
    turn delivered `audio_s` seconds of audio before it failed.

    The WebSocket's audio does not say where one phrase's audio ends, so this is an estimate, made on the
    safe side: at `chars_per_s` (slow) the audio covers at most that many characters, and only the phrases
    that fit entirely count as heard.
    """
    budget = audio_s * chars_per_s
    used = 0
    heard = 0
    for phrase in phrases:
        used += len(phrase.strip())
        if used > budget:
            break
        heard += 1
    return heard


@contextlib.asynccontextmanager
async def closing_stream(source: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """`source`, closed (`aclose()`, which ends an HTTP request) when the block is left, if it can be."""
    try:
        yield source
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


# --- one answer, read in the background -------------------------------------------------------------------


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

    def close(self) -> None:
        """Stop reading now (not awaited: a cleanup path that cannot wait)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def aclose(self) -> None:
        """Stop reading and wait until the source is closed (its HTTP request ended)."""
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # never raises the task's own cancellation

    def _add(self, phrases: list[str]) -> None:
        if phrases:
            self.phrases.extend(phrases)
            self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()
