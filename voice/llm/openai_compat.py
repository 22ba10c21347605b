"""`OpenAICompatibleSource`: any OpenAI-compatible `/v1/chat/completions` endpoint, streamed.

The request goes through the process's shared httpx client (`voice.http`: warm keep-alive connections)
with per-request timeouts; the server-sent events are decoded by `httpx-sse`. Every way the endpoint can
fail becomes an `LLMError` whose message says what was wrong (and which setting to check).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from voice.config import ConfigError, LLMConfig
from voice.llm.source import ChatMessage, LLMError

if TYPE_CHECKING:  # httpx loads on first use: `bridge.config` imports the LLM settings at start-up
    import httpx

__all__ = ["OpenAICompatibleSource", "api_key"]

log = structlog.get_logger(__name__)


def api_key(config: LLMConfig) -> str:
    """The bearer token, as plain text (the one place that reads it: a `SecretStr` needs one edit here)."""
    return config.llm_api_key.get_secret_value()


class OpenAICompatibleSource:
    """`POST {LLM_BASE_URL}/chat/completions` with `stream: true`, read as server-sent events.

    Each event's `choices[0].delta.content` is a piece; `data: [DONE]` (or a `finish_reason`) ends the
    answer. A server that ignores `stream` and answers with one JSON completion is accepted too.
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
        from httpx_sse import EventSource

        from voice.http import shared_http_client

        config = self.config
        headers = {"Accept": "text/event-stream"}
        key = api_key(config)
        if key:
            headers["Authorization"] = f"Bearer {key}"
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
                async for event in EventSource(response).aiter_sse():
                    if not event.data:
                        continue  # an event of only an id or a type: no chunk
                    if event.data == "[DONE]":
                        finished = True
                        break
                    piece, done = _delta(event.data, pieces)
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
