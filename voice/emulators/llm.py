"""A small OpenAI-compatible chat endpoint for tests, benchmarks and the demo (`voice-bridge llm-emulator`).

It serves, on one host and port (aiohttp):
- `POST /v1/chat/completions`: with `stream: true`, server-sent events as OpenAI sends them (a role chunk,
  one `chat.completion.chunk` per piece, a chunk with `finish_reason: "stop"`, `data: [DONE]`); without
  it, one `chat.completion` JSON body. A bad bearer token gets 401 with OpenAI's error body, a malformed
  request 400.
- `GET /v1/models`: the one model it pretends to be (the key checked as for chat).
- control: `GET /_emulator/stats`, `GET|POST /_emulator/knobs` (a JSON object of knob values),
  `POST /_emulator/reset` (stats cleared, knobs back to the start-up values).

The answer is deterministic: the `answer` knob when set, else the `answers` entry whose key ends the last
user message, else
`"Echo: <last user message>"` (at most `ECHO_CHARS` characters). It is cut into pieces the way OpenAI's
tokens come (`" word"`, with the space in front) or into `piece_chars`-character slices, sent with
`first_piece_delay_ms` before the first and `piece_delay_ms` between the others. Faults: `fail_status`
answers an HTTP error (for `fail_count` requests), `fail_after_pieces` drops the connection mid-answer.
Every request is logged in `stats.log` with its messages and the monotonic time each piece was written
(`piece_at`, `first_piece_at`, `last_piece_at`; CLOCK_MONOTONIC, comparable across processes on one
machine, for benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import sys
import time
import uuid
from collections import deque
from typing import Any, ClassVar

import structlog
from aiohttp import web

from voice.config import ConfigError, EnvSettings, Port, help_with_default, setting
from voice.emulators.control import ControlEndpoints, KnobsBase, configure_stderr_logs, port_flag, serve_app

__all__ = ["LLMEmulator", "LLMKnobs", "LLMStats", "split_pieces", "echo_answer", "configure_parser", "run"]

log = structlog.get_logger(__name__)

DEFAULT_MODEL = "emulated-chat"
ECHO_CHARS = 120
_OPENAI_PIECES = re.compile(r"\s*\S+\s*$|\s*\S+")


@dataclasses.dataclass
class LLMKnobs(KnobsBase):
    """Answer, timing and fault knobs; all settable at run time (`set_knobs`, `POST /_emulator/knobs`)."""

    MINIMUMS: ClassVar[dict[str, int]] = {"piece_chars": 0}

    answer: str = ""  # every answer is this text when set
    answers: dict[str, str] = dataclasses.field(default_factory=dict)  # end of the last user message -> answer
    piece_chars: int = 0  # 0: OpenAI-like word pieces (" word"); N > 0: N-character slices
    first_piece_delay_ms: float = 0.0  # time to the first piece (after the role chunk)
    piece_delay_ms: float = 0.0  # between pieces
    fail_status: int = 0  # > 0: answer this HTTP status with OpenAI's error body
    fail_count: int = -1  # how many requests `fail_status` applies to (then it clears itself); -1 = all
    fail_after_pieces: int = -1  # >= 0: drop the connection (no [DONE]) after this many pieces


@dataclasses.dataclass
class LLMStats:
    """What the endpoint saw; `snapshot()` is the JSON of `GET /_emulator/stats`."""

    requests: int = 0  # chat requests, whatever their outcome
    completed: int = 0  # answers sent to the end
    failed: int = 0  # answered with an error status, or dropped mid-answer by `fail_after_pieces`
    client_gone: int = 0  # the client closed the connection before the answer was complete
    in_flight: int = 0  # answers being streamed right now
    log: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))  # one entry per request

    def prompts(self) -> list[str]:
        """The last user message of every logged request, in order."""
        return [entry["prompt"] for entry in self.log]

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self.requests, "completed": self.completed, "failed": self.failed,
                "client_gone": self.client_gone, "in_flight": self.in_flight, "log": list(self.log)}


def echo_answer(prompt: str) -> str:
    """The default answer to `prompt`."""
    return ("Echo: " + " ".join(prompt.split()))[:ECHO_CHARS]


def split_pieces(answer: str, piece_chars: int = 0) -> list[str]:
    """The pieces an answer is streamed in: OpenAI-like (`["Hello,", " how", " are", " you?"]`, the space
    in front of each word) or `piece_chars`-character slices. Joined, they give back the answer."""
    if piece_chars > 0:
        return [answer[i : i + piece_chars] for i in range(0, len(answer), piece_chars)]
    return _OPENAI_PIECES.findall(answer)


class _Rejected(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def response(self) -> web.Response:
        return web.json_response({"error": {"message": self.message, "type": self.kind, "param": None,
                                            "code": self.code}}, status=self.status)


class LLMEmulator(ControlEndpoints):
    """The server. `async with LLMEmulator() as llm:` or `await llm.start()` ... `await llm.stop()`.

    `api_key=None` accepts any request (with or without a token); a string requires `Bearer <api_key>`.
    `url` is the base to configure as `LLM_BASE_URL` (it ends in `/v1`).
    """

    def __init__(self, *, api_key: str | None = None, knobs: LLMKnobs | None = None,
                 model: str = DEFAULT_MODEL) -> None:
        self.api_key = api_key
        self.model = model
        self.knobs = knobs or LLMKnobs()
        self._initial = dataclasses.replace(self.knobs, answers=dict(self.knobs.answers))
        self.stats = LLMStats()
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._fail_left = self.knobs.fail_count

    # --- life cycle -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> LLMEmulator:
        app = web.Application(client_max_size=8 * 2**20)
        app.add_routes([
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
            *self.control_routes(),
        ])
        self._runner, self.port = await serve_app(app, host, port)
        self.host = host
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def reset(self) -> None:
        """Clear the stats and put the knobs back to their start-up values."""
        self.stats = LLMStats()
        self.knobs = dataclasses.replace(self._initial, answers=dict(self._initial.answers))
        self._fail_left = self.knobs.fail_count

    def answer_for(self, prompt: str) -> str:
        knobs = self.knobs
        if knobs.answer:
            return knobs.answer
        for key, answer in knobs.answers.items():
            if prompt.endswith(key):  # clients may merge consecutive user messages into one
                return answer
        return echo_answer(prompt)

    # --- the chat endpoint ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        entry: dict[str, Any] = {"received_at": time.monotonic(), "prompt": "", "messages": None,
                                 "outcome": "rejected"}
        self.stats.log.append(entry)
        try:
            body = await self._validate(request)
        except _Rejected as rejected:
            entry["status"] = rejected.status
            self.stats.failed += 1
            return rejected.response()
        messages = body["messages"]
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        answer = self.answer_for(prompt)
        entry.update(messages=messages, prompt=prompt, model=body["model"], stream=bool(body.get("stream")),
                     answer=answer, status=200, pieces=0, first_piece_at=None, last_piece_at=None, piece_at=[])
        if not body.get("stream"):
            entry["outcome"] = "done"
            self.stats.completed += 1
            return web.json_response(self._completion(body["model"], answer))
        return await self._stream(request, body["model"], answer, entry)

    async def _validate(self, request: web.Request) -> dict[str, Any]:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _Rejected(401, "Incorrect API key provided.", "invalid_api_key")
        if self.knobs.fail_status > 0 and self._fail_left != 0:
            if self._fail_left > 0:
                self._fail_left -= 1
            status = self.knobs.fail_status
            raise _Rejected(status, f"Emulated failure with status {status}.",
                            "rate_limit_exceeded" if status == 429 else "server_error",
                            "requests" if status == 429 else "server_error")
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Rejected(400, "We could not parse the JSON body of your request.", "invalid_json") from None
        if not isinstance(body, dict):
            raise _Rejected(400, "The request body must be a JSON object.", "invalid_request")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _Rejected(400, "you must provide a model parameter", "missing_model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Rejected(400, "'messages' must be a non-empty array", "invalid_messages")
        for index, message in enumerate(messages):
            if (not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant")
                    or not isinstance(message.get("content"), str)):
                raise _Rejected(400, f"Invalid value for 'messages[{index}]': expected an object with a role "
                                     "(system, user, assistant) and string content", "invalid_messages")
        return body

    async def _stream(self, request: web.Request, model: str, answer: str, entry: dict[str, Any]) -> web.StreamResponse:
        knobs = self.knobs
        ident = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", "x-request-id": ident})
        await response.prepare(request)
        self.stats.in_flight += 1
        try:
            await response.write(_event(_chunk(ident, created, model, {"role": "assistant", "content": ""})))
            pieces = split_pieces(answer, knobs.piece_chars)
            for index, piece in enumerate(pieces):
                delay = knobs.first_piece_delay_ms if index == 0 else knobs.piece_delay_ms
                if delay > 0:
                    await asyncio.sleep(delay / 1000)
                if 0 <= knobs.fail_after_pieces <= index:
                    entry["outcome"] = "dropped"
                    self.stats.failed += 1
                    await _abort(request)
                    return response
                stamp = time.monotonic()
                await response.write(_event(_chunk(ident, created, model, {"content": piece})))
                entry["pieces"] = index + 1
                entry["piece_at"].append(stamp)
                entry["last_piece_at"] = stamp
                if entry["first_piece_at"] is None:
                    entry["first_piece_at"] = stamp
            await response.write(_event(_chunk(ident, created, model, {}, finish="stop")))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            entry["outcome"] = "done"
            self.stats.completed += 1
        except ConnectionResetError:  # the client went away (hang-up, barge-in): nothing to answer
            entry["outcome"] = "client_gone"
            self.stats.client_gone += 1
        except asyncio.CancelledError:
            entry["outcome"] = "client_gone"
            self.stats.client_gone += 1
            raise
        finally:
            self.stats.in_flight -= 1
        return response

    def _completion(self, model: str, answer: str) -> dict[str, Any]:
        return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(split_pieces(answer)),
                          "total_tokens": len(split_pieces(answer))}}

    async def _models(self, request: web.Request) -> web.Response:
        """`GET /v1/models`: the one model, to a client with the key (401 in OpenAI's shape otherwise, as
        OpenAI answers: a preflight check proves the key with it)."""
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _Rejected(401, "Incorrect API key provided.", "invalid_api_key").response()
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                              "owned_by": "voice-bridge"}]})


def _chunk(ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _abort(request: web.Request) -> None:
    """Drop the connection without ending the chunked body (after what was written has left)."""
    transport = request.transport
    if transport is None:
        return
    for _ in range(200):
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    transport.abort()


# --- command line ---------------------------------------------------------------------------------------


class LLMEmulatorSettings(EnvSettings):
    """What the LLM emulator reads from the environment (and `.env`); --port wins over it."""

    port: Port = setting("LLM_EMULATOR_PORT", 8766, "port; 0 picks a free one")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = LLMKnobs()
    parser.add_argument("--host", default="127.0.0.1", help=help_with_default("address to listen on", "127.0.0.1"))
    parser.add_argument("--port", type=port_flag(LLMEmulatorSettings), default=None,
                        help="port; 0 picks a free one [env LLM_EMULATOR_PORT; default 8766]")
    parser.add_argument("--api-key", default=None, help="the one accepted bearer token; unset: any")
    parser.add_argument("--answer", default=defaults.answer,
                        help="answer every request with this text; unset: an echo of the question")
    parser.add_argument("--piece-chars", type=int, default=defaults.piece_chars,
                        help=help_with_default("characters per piece; 0 = word pieces like OpenAI's",
                                               defaults.piece_chars))
    parser.add_argument("--first-piece-delay-ms", type=float, default=defaults.first_piece_delay_ms,
                        help=help_with_default("milliseconds before the first piece", defaults.first_piece_delay_ms))
    parser.add_argument("--piece-delay-ms", type=float, default=defaults.piece_delay_ms,
                        help=help_with_default("milliseconds between pieces", defaults.piece_delay_ms))
    parser.add_argument("--knobs", default="",
                        help=f"JSON object of further knobs: {', '.join(f.name for f in dataclasses.fields(LLMKnobs))}")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                        help="log level (logs go to stderr) [env LOG_LEVEL; default info]")


def _knobs_from_args(args: argparse.Namespace) -> LLMKnobs:
    knobs = LLMKnobs()
    knobs.update({"answer": args.answer, "piece_chars": args.piece_chars,
                  "first_piece_delay_ms": args.first_piece_delay_ms, "piece_delay_ms": args.piece_delay_ms})
    knobs.update_json(args.knobs)
    return knobs


async def _serve(args: argparse.Namespace) -> None:
    emulator = LLMEmulator(api_key=args.api_key, knobs=_knobs_from_args(args))
    await emulator.serve_until_signalled(args.host, args.port)


def run(args: argparse.Namespace) -> int:
    """stdout carries only the "listening on URL" line; logs go to stderr, configured by the entry point
    (`voice-bridge llm-emulator`, or `python -m` below)."""
    args.port = LLMEmulatorSettings.load(port=args.port).port  # ConfigError: exit status 2
    try:
        asyncio.run(_serve(args))
    except (ValueError, OSError) as exc:
        print(f"voice-bridge llm-emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # `python -m voice.emulators.llm`
    _parser = argparse.ArgumentParser(prog="python -m voice.emulators.llm", description=__doc__.splitlines()[0])
    configure_parser(_parser)
    _args = _parser.parse_args()
    try:
        configure_stderr_logs(_args.log_level)
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(run(_args))
    except ConfigError as _exc:
        print(f"{_parser.prog}: configuration error: {_exc}", file=sys.stderr)
        sys.exit(2)
