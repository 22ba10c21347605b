"""A local ElevenLabs-compatible server for tests and the offline demo (`voice-bridge emulator`).

It speaks the real API on one host and port (aiohttp), with the same validation and error bodies:
- `POST /v1/text-to-speech/{voice_id}/stream`: chunked raw audio, response headers as ElevenLabs sends them;
- `POST /v1/text-to-speech/{voice_id}`: the same audio in one body;
- `GET  /v1/text-to-speech/{voice_id}/stream-input`: the input-streaming WebSocket (first message, text
  pieces, flush, keep-alive `{"text": " "}`, end of input `{"text": ""}` -> rest of the audio,
  `{"audio": null, "isFinal": true}`, close 1000; bad key -> close 1008 after the handshake; inactivity
  timeout -> `input_timeout_exceeded` frame and close 1008).
The audio is a deterministic function of the text (see `voice.emulators.tone_code`): a test can tell which text
it hears, byte for byte (`expected_frames`) or by decoding (`identify`).

Faults are knobs (`Knobs`), settable in-process (`Emulator.set_knobs`) or over HTTP, and what happened is
counted (`Stats`), readable in-process or over HTTP, so a test can drive the emulator in another process:
- `GET /_emulator/stats`, `POST /_emulator/reset` (stats cleared, knobs back to the start-up values),
- `GET /_emulator/knobs`, `POST /_emulator/knobs` with a JSON object of knob values.
Where the real service's behaviour is unconfirmed (what exactly a WebSocket auth failure sends, whether an
upgrade can be refused with a status), the emulator does the plausible thing and says so in `Knobs`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
import select
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any, ClassVar

import structlog
from aiohttp import WSMsgType, web

from pydantic import SecretStr

from voice.config import G711_FORMATS, PCM_RATES, ConfigError, EnvSettings, Port, setting
from voice.emulators.tone_code import CHAR_MS, expected_frames, identify, synthesize
from voice.emulators.control import ControlEndpoints, KnobsBase, configure_stderr_logs, serve_app

__all__ = ["Emulator", "EmulatorProcess", "Knobs", "Stats", "expected_frames", "identify", "synthesize",
           "DEFAULT_API_KEY", "DEFAULT_VOICES", "configure_parser", "run"]

log = structlog.get_logger(__name__)

DEFAULT_API_KEY = "emulator-key"
DEFAULT_VOICES = ("21m00Tcm4TlvDq8ikWAM", "JBFqnCBsd6RMkjVDRZzb", "EXAVITQu4vr4xnSDxMaL")
SUPPORTED_FORMATS = tuple(PCM_RATES) + tuple(sorted(G711_FORMATS))
KNOWN_FORMATS = SUPPORTED_FORMATS + (
    "mp3_22050_32", "mp3_24000_48", "mp3_44100_32", "mp3_44100_64", "mp3_44100_96", "mp3_44100_128",
    "mp3_44100_192", "opus_48000_32", "opus_48000_64", "opus_48000_96", "opus_48000_128", "opus_48000_192",
)
DEFAULT_FORMAT = "mp3_44100_128"  # the real API's default, which the emulator cannot produce (a clear 422)
CONTENT_TYPES = {"ulaw_8000": "audio/basic", "alaw_8000": "audio/x-alaw-basic"}
OVERSIZED_BYTES = 2**20 + 1024  # "one message over 1 MiB"
INACTIVITY_MAX_S = 180
CLOSE_REASON_MAX = 120  # a WebSocket close reason must fit in 123 bytes
INACTIVITY_MESSAGE = (
    "Have not received a new text input within the timeout of {timeout} seconds. Streaming input terminated. "
    "Please make sure to either feed the input in the timely manner, or to send the end of input text "
    '(empty string "") when done.'
)
INVALID_MESSAGE = "Could not parse input message, make sure it is a json and follows the schema outlined in protocol."


@dataclasses.dataclass
class Knobs(KnobsBase):
    """Fault and timing knobs. Every field can be set at run time (in-process or `POST /_emulator/knobs`)."""

    MINIMUMS: ClassVar[dict[str, int]] = {"chunk_bytes": 1}

    ttfb_ms: float = 0.0  # delay before the first audio byte of each generation
    realtime_factor: float = 0.0  # audio is sent at this multiple of real time; 0 = as fast as possible
    chunk_bytes: int = 4096  # audio bytes per HTTP chunk / WebSocket message
    odd_chunks: bool = False  # chunk sizes become odd (1 .. 2*chunk_bytes), splitting 16-bit samples
    max_concurrent: int = 0  # > 0: HTTP requests over this many generations get 429 too_many_concurrent_requests
    abort_after_bytes: int = -1  # >= 0: drop the connection after this many audio bytes (HTTP: truncated body;
    # WebSocket: no close frame, the client sees 1006)
    fail_status: int = 0  # > 0: answer with this HTTP status and ElevenLabs' error body (also refuses the
    # WebSocket upgrade with it: unconfirmed what the real service does there)
    fail_count: int = -1  # how many requests `fail_status` applies to (then it clears itself); -1 = all
    fail_detail: str = ""  # `detail.status` for `fail_status` (default: the usual one for that status)
    ws_inactivity_timeout_s: float = 20.0  # used when the URL has no `inactivity_timeout`
    ws_error_code: int = 0  # > 0: at its first generation a WebSocket sends an error frame and closes with
    # this code (1011: internal error)
    ws_error_after_bytes: int = 0  # ... after this many audio bytes of that generation
    oversized_message: bool = False  # send each WebSocket generation as one message over 1 MiB (its audio,
    # padded at the end with silence when shorter)
    alignment: bool = True  # include `alignment` / `normalizedAlignment` in WebSocket audio messages
    ws_auth_error_frame: bool = True  # bad key: send an `invalid_api_key` error frame before close 1008
    # (unconfirmed: the real service may close with 1008 alone; set False to emulate that)
    character_quota: int = -1  # >= 0: characters the account may still use (401 quota_exceeded after)
    max_characters: int = 40000  # per request (400 max_character_limit_exceeded above it)
    tier_gated_formats: list[str] = dataclasses.field(default_factory=list)  # 403 for these (e.g. pcm_44100)
    voices: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_VOICES))  # others: 404


@dataclasses.dataclass
class Stats:
    """What the emulator saw. `snapshot()` is the JSON of `GET /_emulator/stats`."""

    http_requests: int = 0  # TTS HTTP requests, whatever their outcome
    http_status: Counter = dataclasses.field(default_factory=Counter)  # answers by status code
    ws_connections: int = 0  # WebSocket upgrades accepted
    ws_open: int = 0  # WebSockets open right now
    ws_messages: int = 0  # client messages received on WebSockets
    ws_keepalives: int = 0  # whitespace-only text messages after the first message
    ws_generations: int = 0  # texts generated over WebSockets
    ws_max_message_bytes: int = 0  # the largest message the emulator sent on a WebSocket
    ws_audio_log: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))  # per generation:
    # text and `first_audio_at` (time.monotonic() as its first audio message went out; benchmarks)
    ws_close_codes: Counter = dataclasses.field(default_factory=Counter)  # close codes the emulator sent
    ws_first_messages: deque = dataclasses.field(default_factory=lambda: deque(maxlen=100))
    ws_queries: deque = dataclasses.field(default_factory=lambda: deque(maxlen=100))
    characters: int = 0  # characters billed (HTTP text and WebSocket generated text)
    texts: Counter = dataclasses.field(default_factory=Counter)  # generated text -> times
    concurrent: int = 0
    max_concurrent_seen: int = 0
    requests: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))  # recent HTTP requests

    def snapshot(self) -> dict[str, Any]:
        return {
            "http_requests": self.http_requests,
            "http_status": {str(k): v for k, v in self.http_status.items()},
            "ws_connections": self.ws_connections,
            "ws_open": self.ws_open,
            "ws_messages": self.ws_messages,
            "ws_keepalives": self.ws_keepalives,
            "ws_generations": self.ws_generations,
            "ws_max_message_bytes": self.ws_max_message_bytes,
            "ws_audio_log": list(self.ws_audio_log),
            "ws_close_codes": {str(k): v for k, v in self.ws_close_codes.items()},
            "ws_first_messages": list(self.ws_first_messages),
            "ws_queries": list(self.ws_queries),
            "characters": self.characters,
            "texts": dict(self.texts),
            "concurrent": self.concurrent,
            "max_concurrent_seen": self.max_concurrent_seen,
            "requests": list(self.requests),
        }


class _Rejected(Exception):
    """An HTTP error answer: status, `detail.status` and message (or a FastAPI-shaped detail list)."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail

    def body(self) -> dict[str, Any]:
        if self.detail is not None:
            return {"detail": self.detail}
        return {"detail": {"status": self.code, "message": self.message}}


_STATUS_DETAIL = {
    400: ("invalid_request", "Invalid request."),
    401: ("invalid_api_key", "Invalid API key"),
    402: ("payment_required", "Payment required."),
    403: ("missing_permissions", "This API key does not have the required permissions."),
    404: ("not_found", "Not found."),
    429: ("too_many_concurrent_requests", "Too many concurrent requests for your subscription."),
    500: ("internal_server_error", "An internal server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("system_busy", "The system is experiencing heavy traffic, please try again later."),
}


def _missing(loc: list[Any], given: Any) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": given}


class Emulator(ControlEndpoints):
    """The server. `async with Emulator() as emu:` or `await emu.start()` ... `await emu.stop()`.

    `api_key=None` accepts any non-empty key. `ssl_context` serves https/wss (for the official SDK's
    WebSocket client, which forces wss).
    """

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        knobs: Knobs | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key
        self.knobs = knobs or Knobs()
        self._initial_knobs = Knobs()
        self._initial_knobs.update(self.knobs.as_dict())
        self.stats = Stats()
        self.ssl_context = ssl_context
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._websockets: set[web.WebSocketResponse] = set()
        self._fail_left = -1

    # --- life cycle -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Emulator:
        app = web.Application(client_max_size=4 * 2**20)
        app.add_routes(
            [
                web.post("/v1/text-to-speech/{voice_id}/stream", self._http_stream),
                web.post("/v1/text-to-speech/{voice_id}", self._http_convert),
                web.get("/v1/text-to-speech/{voice_id}/stream-input", self._websocket),
                *self.control_routes(),
            ]
        )
        self._runner, self.port = await serve_app(app, host, port, self.ssl_context)
        self.host = host
        self._fail_left = self.knobs.fail_count
        log.debug("emulator_started", url=self.url)
        return self

    async def stop(self) -> None:
        for ws in list(self._websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"emulator stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """Base URL to configure as `ELEVENLABS_BASE_URL` (http, or https with an SSL context)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return ("wss" if self.ssl_context else "ws") + self.url[self.url.index(":"):]

    def reset(self) -> None:
        """Clear the stats and put the knobs back to their start-up values."""
        self.stats = Stats()
        self.knobs = Knobs()
        self.knobs.update(self._initial_knobs.as_dict())
        self._fail_left = self.knobs.fail_count

    # --- shared checks ----------------------------------------------------------------------------------

    def _key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        return self.api_key is None or key == self.api_key

    def _take_failure(self) -> _Rejected | None:
        status = self.knobs.fail_status
        if status <= 0 or self._fail_left == 0:
            return None
        if self._fail_left > 0:
            self._fail_left -= 1
        code, message = _STATUS_DETAIL.get(status, ("error", f"Emulated failure with status {status}."))
        if self.knobs.fail_detail:
            code = self.knobs.fail_detail
        return _Rejected(status, code, message)

    def _check_voice_and_format(self, voice_id: str, output_format: str, where: str) -> None:
        if voice_id not in self.knobs.voices:
            raise _Rejected(404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
        if output_format not in KNOWN_FORMATS:
            raise _Rejected(
                422, "invalid_output_format", f"Invalid output format {output_format!r}.",
                detail=[{"type": "enum", "loc": [where, "output_format"],
                         "msg": f"Input should be one of {', '.join(KNOWN_FORMATS)}", "input": output_format}],
            )
        if output_format not in SUPPORTED_FORMATS:
            raise _Rejected(
                422, "unsupported_output_format",
                f"The emulator produces only {', '.join(SUPPORTED_FORMATS)}, not {output_format!r}.",
            )
        if output_format in self.knobs.tier_gated_formats:
            raise _Rejected(
                403, "output_format_not_allowed",
                f"Output format {output_format} is not available on your subscription tier.",
            )

    def _bill(self, text: str) -> None:
        quota = self.knobs.character_quota
        if quota >= 0 and self.stats.characters + len(text) > quota:
            raise _Rejected(401, "quota_exceeded",
                            f"This request exceeds your quota. You have {max(0, quota - self.stats.characters)} "
                            f"credits remaining, while {len(text)} credits are required for this request.")
        self.stats.characters += len(text)
        self.stats.texts[text.strip()] += 1

    def _chunk_sizes(self, total: int) -> Iterator[int]:
        size = self.knobs.chunk_bytes
        if not self.knobs.odd_chunks:
            while True:
                yield size
        rng = random.Random(total)  # deterministic per audio length
        while True:
            yield rng.randrange(1, 2 * size + 1) | 1

    def _chunks(self, audio: bytes) -> Iterator[bytes]:
        sizes = self._chunk_sizes(len(audio))
        pos = 0
        while pos < len(audio):
            size = next(sizes)
            yield audio[pos : pos + size]
            pos += size

    async def _pace(self, start: float, sent: int, bytes_per_s: int) -> None:
        factor = self.knobs.realtime_factor
        if factor > 0:
            due = start + sent / bytes_per_s / factor
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def _enter_generation(self) -> None:
        self.stats.concurrent += 1
        self.stats.max_concurrent_seen = max(self.stats.max_concurrent_seen, self.stats.concurrent)

    # --- HTTP ---------------------------------------------------------------------------------------------

    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._http_tts(request, streaming=True)

    async def _http_convert(self, request: web.Request) -> web.StreamResponse:
        return await self._http_tts(request, streaming=False)

    async def _http_tts(self, request: web.Request, *, streaming: bool) -> web.StreamResponse:
        self.stats.http_requests += 1
        request_id = uuid.uuid4().hex
        entry: dict[str, Any] = {
            "request_id": request_id,
            "path": request.path,
            "query": dict(request.query),
            "accept_encoding": request.headers.get("Accept-Encoding"),
            "peer": _peer(request),
            "received_at": time.monotonic(),
        }
        self.stats.requests.append(entry)
        headers = {"request-id": request_id, "x-trace-id": request_id[:16], "x-region": "emulator"}
        try:
            text, output_format = await self._validate_http(request, entry)
        except _Rejected as rejected:
            entry["status"] = rejected.status
            self.stats.http_status[rejected.status] += 1
            return web.json_response(rejected.body(), status=rejected.status, headers=headers)
        self.stats.http_status[200] += 1
        entry["status"] = 200
        self._enter_generation()
        try:
            audio = synthesize(text.strip(), output_format)
            headers.update(
                {
                    "character-cost": str(len(text)),
                    "current-concurrent-requests": str(self.stats.concurrent),
                    "maximum-concurrent-requests": str(self.knobs.max_concurrent or 10),
                    "history-item-id": request_id,
                }
            )
            if self.knobs.ttfb_ms > 0:
                await asyncio.sleep(self.knobs.ttfb_ms / 1000)
            response = web.StreamResponse(status=200, headers=headers)
            response.content_type = CONTENT_TYPES.get(output_format, "audio/pcm")
            if streaming:
                response.enable_chunked_encoding()
            else:
                response.content_length = len(audio)
            try:
                await response.prepare(request)
                await self._send_http_audio(request, response, audio, output_format, entry)
            except ConnectionResetError:  # the client went away (cancelled, barge-in), maybe before the headers
                entry["client_gone"] = True
            return response
        finally:
            self.stats.concurrent -= 1

    async def _validate_http(self, request: web.Request, entry: dict[str, Any]) -> tuple[str, str]:
        if not self._key_ok(request.headers.get("xi-api-key")):
            raise _Rejected(401, "invalid_api_key", "Invalid API key")
        failure = self._take_failure()
        if failure is not None:
            raise failure
        output_format = request.query.get("output_format", DEFAULT_FORMAT)
        self._check_voice_and_format(request.match_info["voice_id"], output_format, "query")
        latency = request.query.get("optimize_streaming_latency")
        if latency is not None and latency not in {"0", "1", "2", "3", "4"}:
            raise _Rejected(422, "validation_error", "bad optimize_streaming_latency", detail=[
                {"type": "int_parsing" if not latency.lstrip("-").isdigit() else "less_than_equal",
                 "loc": ["query", "optimize_streaming_latency"],
                 "msg": "Input should be an integer between 0 and 4", "input": latency}])
        body = await self._json_body(request)
        entry["body"] = body
        text = body.get("text")
        if text is None:
            raise _Rejected(422, "validation_error", "text is required", detail=[_missing(["body", "text"], body)])
        if not isinstance(text, str):
            raise _Rejected(422, "validation_error", "text must be a string", detail=[
                {"type": "string_type", "loc": ["body", "text"], "msg": "Input should be a valid string",
                 "input": text}])
        if not text.strip():
            raise _Rejected(400, "empty_text", "The text must not be empty.")
        self._check_voice_settings(body.get("voice_settings"), ["body", "voice_settings"])
        if len(text) > self.knobs.max_characters:
            raise _Rejected(400, "max_character_limit_exceeded",
                            f"Text is too long: {len(text)} characters, the limit is {self.knobs.max_characters}.")
        if self.knobs.max_concurrent > 0 and self.stats.concurrent >= self.knobs.max_concurrent:
            raise _Rejected(429, "too_many_concurrent_requests",
                            f"Already running {self.stats.concurrent} requests; your limit is "
                            f"{self.knobs.max_concurrent}.")
        self._bill(text)
        return text, output_format

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Rejected(422, "validation_error", "body is not JSON", detail=[
                {"type": "json_invalid", "loc": ["body", getattr(exc, "pos", 0)], "msg": "JSON decode error",
                 "input": {}, "ctx": {"error": str(exc)}}]) from None
        if body is None:
            raise _Rejected(422, "validation_error", "body is required", detail=[_missing(["body"], None)])
        if not isinstance(body, dict):
            raise _Rejected(422, "validation_error", "body must be an object", detail=[
                {"type": "model_attributes_type", "loc": ["body"],
                 "msg": "Input should be a valid dictionary or object to extract fields from", "input": body}])
        return body

    @staticmethod
    def _check_voice_settings(settings: Any, loc: list[Any]) -> None:
        if settings is None:
            return
        if not isinstance(settings, dict):
            raise _Rejected(422, "validation_error", "voice_settings must be an object", detail=[
                {"type": "model_attributes_type", "loc": loc, "msg": "Input should be a valid dictionary",
                 "input": settings}])
        ranges = {"stability": (0, 1), "similarity_boost": (0, 1), "style": (0, 1), "speed": (0.7, 1.2)}
        for name, (lo, hi) in ranges.items():
            value = settings.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise _Rejected(422, "validation_error", f"bad {name}", detail=[
                    {"type": "value_error", "loc": [*loc, name],
                     "msg": f"Input should be a number between {lo} and {hi}", "input": value}])

    async def _send_http_audio(self, request: web.Request, response: web.StreamResponse, audio: bytes,
                               output_format: str, entry: dict[str, Any]) -> None:
        bytes_per_s = _bytes_per_second(output_format)
        abort_after = self.knobs.abort_after_bytes
        start = time.monotonic()
        sent = 0
        for chunk in self._chunks(audio):
            if 0 <= abort_after < sent + len(chunk):
                if abort_after > sent:
                    await response.write(chunk[: abort_after - sent])
                entry["aborted_after"] = abort_after
                await _abort(request)
                return
            await self._pace(start, sent, bytes_per_s)
            if sent == 0:
                entry["first_byte_at"] = time.monotonic()
            await response.write(chunk)
            sent += len(chunk)
        if abort_after >= 0 and abort_after >= sent:  # the whole body fit: drop before the final chunk
            entry["aborted_after"] = sent
            await _abort(request)
            return
        entry["bytes"] = sent
        await response.write_eof()

    # --- WebSocket ----------------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        failure = self._take_failure()
        if failure is not None:
            self.stats.http_status[failure.status] += 1
            return web.json_response(failure.body(), status=failure.status)
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=4 * 2**20)
        await ws.prepare(request)
        stats = self.stats
        stats.ws_connections += 1
        stats.ws_open += 1
        self._websockets.add(ws)
        session = _Session(self, request, ws)
        try:
            await session.run()
        finally:
            stats.ws_open -= 1
            self._websockets.discard(ws)
            if session.sender is not None and not session.sender.done():
                session.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await session.sender
        return ws


class _Session:
    """One `stream-input` WebSocket: reads client messages, queues texts, a sender task speaks them."""

    def __init__(self, emulator: Emulator, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.emu = emulator
        self.request = request
        self.ws = ws
        query = request.query
        self.output_format = query.get("output_format", DEFAULT_FORMAT)
        self.auto_mode = query.get("auto_mode", "false").lower() == "true"
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.sender: asyncio.Task[None] | None = None
        self.buffer = ""
        self.schedule = [120, 160, 250, 290]
        self.schedule_index = 0
        self.settings: dict[str, Any] = {}
        self.ended = False
        self.closing = False
        emulator.stats.ws_queries.append(
            {"path": request.path, "query": dict(query), "xi_api_key_header": request.headers.get("xi-api-key")}
        )

    async def fail(self, code: int, error: str, message: str) -> None:
        """Send an error frame and close with `code` (unless a close is already under way)."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):
            await self.ws.send_str(json.dumps({"message": message, "error": error, "code": code}))
        await self.close(code, message)

    async def close(self, code: int, reason: str = "") -> None:
        self.closing = True
        self.emu.stats.ws_close_codes[code] += 1
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:CLOSE_REASON_MAX])

    def _inactivity_timeout(self) -> float | None:
        raw = self.request.query.get("inactivity_timeout")
        if raw is None:
            return self.emu.knobs.ws_inactivity_timeout_s
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if 0 < value <= INACTIVITY_MAX_S else None

    async def run(self) -> None:
        emu = self.emu
        header_key = self.request.headers.get("xi-api-key")
        if header_key is not None and not emu._key_ok(header_key):
            await self._auth_failure()
            return
        try:
            emu._check_voice_and_format(self.request.match_info["voice_id"], self.output_format, "query")
        except _Rejected as rejected:
            await self.fail(1008, rejected.code, rejected.message)
            return
        timeout = self._inactivity_timeout()
        if timeout is None:
            await self.fail(1008, "invalid_request",
                            f"inactivity_timeout must be a number of seconds up to {INACTIVITY_MAX_S}")
            return
        first = True
        while not self.closing:
            try:
                msg = await self.ws.receive(timeout=None if self.ended else timeout)
            except asyncio.TimeoutError:
                await self.fail(1008, "input_timeout_exceeded", INACTIVITY_MESSAGE.format(timeout=int(timeout)))
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type is not WSMsgType.TEXT:
                await self.fail(1008, "invalid_input_message", INVALID_MESSAGE)
                return
            emu.stats.ws_messages += 1
            if self.ended:
                continue  # nothing counts after the end of input
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                await self.fail(1008, "invalid_input_message", INVALID_MESSAGE)
                return
            is_first = first
            if first:
                first = False
                emu.stats.ws_first_messages.append(data)
                if header_key is None and not emu._key_ok(data.get("xi_api_key")):
                    await self._auth_failure()
                    return
                if not await self._first_message(data):
                    return
                self.sender = asyncio.create_task(self._send_audio(), name="emulator ws sender")
            elif not await self._same_settings(data):
                return
            self._on_text(data, first_message=is_first)

    async def _auth_failure(self) -> None:
        if self.emu.knobs.ws_auth_error_frame:
            await self.fail(1008, "invalid_api_key", "Invalid API key")
        else:
            await self.close(1008, "Invalid API key")

    async def _first_message(self, data: dict[str, Any]) -> bool:
        try:
            self.emu._check_voice_settings(data.get("voice_settings"), ["voice_settings"])
        except _Rejected as rejected:
            await self.fail(1008, "invalid_input_message", f"{rejected.message}: {rejected.detail}")
            return False
        for name in ("voice_settings", "generation_config"):
            if data.get(name) is not None:
                self.settings[name] = data[name]
        schedule = (data.get("generation_config") or {}).get("chunk_length_schedule")
        if isinstance(schedule, list) and schedule and all(isinstance(v, int) and v > 0 for v in schedule):
            self.schedule = schedule
        return True

    async def _same_settings(self, data: dict[str, Any]) -> bool:
        for name in ("voice_settings", "generation_config"):
            if data.get(name) is not None and data[name] != self.settings.get(name):
                await self.fail(1008, "invalid_input_message",
                                f"{name} can only be sent in the first message, or repeated unchanged")
                return False
        return True

    def _on_text(self, data: dict[str, Any], *, first_message: bool) -> None:
        text: str = data["text"]
        if text == "":
            self._generate(self.buffer)
            self.buffer = ""
            self.ended = True
            self.queue.put_nowait(None)
            return
        if not text.strip() and not data.get("flush") and not first_message:
            self.emu.stats.ws_keepalives += 1
        if self.auto_mode:
            self._generate(text)
            return
        self.buffer += text
        threshold = self.schedule[min(self.schedule_index, len(self.schedule) - 1)]
        if (data.get("flush") or (data.get("try_trigger_generation") and len(self.buffer.strip()) >= 50)
                or len(self.buffer.strip()) >= threshold):
            self._generate(self.buffer)
            self.buffer = ""
            self.schedule_index += 1

    def _generate(self, text: str) -> None:
        if text.strip():
            self.queue.put_nowait(text.strip())

    async def _send_audio(self) -> None:
        """Speak queued texts in order; after the end of input: `isFinal`, then close 1000."""
        try:
            await self._speak_queue()
        except ConnectionResetError:  # the client went away
            pass

    async def _speak_queue(self) -> None:
        emu = self.emu
        first = True
        while True:
            text = await self.queue.get()
            if text is None:
                break
            if first and emu.knobs.ttfb_ms > 0:
                await asyncio.sleep(emu.knobs.ttfb_ms / 1000)
            emu.stats.ws_generations += 1
            try:
                emu._bill(text)
            except _Rejected as rejected:
                await self.fail(1008, rejected.code, rejected.message)
                return
            emu._enter_generation()
            try:
                if not await self._send_generation(text, first):
                    return
            finally:
                emu.stats.concurrent -= 1
            first = False
        with contextlib.suppress(Exception):
            await self.ws.send_str(json.dumps({"audio": None, "isFinal": True, "normalizedAlignment": None,
                                               "alignment": None}))
        await self.close(1000)

    async def _send_generation(self, text: str, first: bool) -> bool:
        """Send one text's audio; False when a knob ended the connection."""
        knobs = self.emu.knobs
        audio = synthesize(text, self.output_format)
        if first and knobs.ws_error_code > 0 and knobs.ws_error_after_bytes <= 0:
            await self.fail(knobs.ws_error_code, "internal_error", "An internal server error occurred.")
            return False
        bytes_per_s = _bytes_per_second(self.output_format)
        chunks = [_pad_oversized(audio, self.output_format)] if knobs.oversized_message else self._chunks_of(audio)
        start = time.monotonic()
        sent = 0
        for chunk in chunks:
            if 0 <= knobs.abort_after_bytes < sent + len(chunk):
                if knobs.abort_after_bytes > sent:
                    await self._send_chunk(text, chunk[: knobs.abort_after_bytes - sent], sent)
                await _abort(self.request)
                return False
            if first and knobs.ws_error_code > 0 and sent >= knobs.ws_error_after_bytes:
                await self.fail(knobs.ws_error_code, "internal_error", "An internal server error occurred.")
                return False
            await self.emu._pace(start, sent, bytes_per_s)
            await self._send_chunk(text, chunk, sent)
            sent += len(chunk)
        return True

    def _chunks_of(self, audio: bytes) -> Iterator[bytes]:
        return self.emu._chunks(audio)

    async def _send_chunk(self, text: str, chunk: bytes, offset: int) -> None:
        message: dict[str, Any] = {"audio": base64.b64encode(chunk).decode("ascii"), "isFinal": None}
        if self.emu.knobs.alignment:
            alignment = _alignment(text, offset, len(chunk), _bytes_per_second(self.output_format))
            message["alignment"] = alignment
            message["normalizedAlignment"] = alignment
        payload = json.dumps(message)
        self.emu.stats.ws_max_message_bytes = max(self.emu.stats.ws_max_message_bytes, len(payload))
        if offset == 0:
            self.emu.stats.ws_audio_log.append({"text": text, "first_audio_at": time.monotonic()})
        await self.ws.send_str(payload)


def _peer(request: web.Request) -> str | None:
    """host:port of the client: shows whether a client reused its keep-alive connection."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else None


def _bytes_per_second(output_format: str) -> int:
    return PCM_RATES[output_format] * 2 if output_format in PCM_RATES else 8000


def _alignment(text: str, offset: int, length: int, bytes_per_s: int) -> dict[str, list[Any]] | None:
    """Characters starting within this chunk, with times relative to the chunk's start."""
    per_char = bytes_per_s * CHAR_MS // 1000
    first = -(-offset // per_char)
    last = -(-(offset + length) // per_char)
    chars = list(text[first:last])
    if not chars:
        return None
    chunk_ms = offset * 1000 // bytes_per_s
    return {
        "chars": chars,
        "charStartTimesMs": [(first + i) * CHAR_MS - chunk_ms for i in range(len(chars))],
        "charDurationsMs": [CHAR_MS] * len(chars),
    }


def _pad_oversized(audio: bytes, output_format: str) -> bytes:
    """`audio`, padded with silence until its base64 is over 1 MiB (whole samples)."""
    need = OVERSIZED_BYTES * 3 // 4 + 3
    if len(audio) >= need:
        return audio
    silence = b"\x00" if output_format in PCM_RATES else (b"\xff" if output_format == "ulaw_8000" else b"\xd5")
    pad = need - len(audio)
    pad += pad % 2 if output_format in PCM_RATES else 0
    return audio + silence * pad


async def _abort(request: web.Request) -> None:
    """Drop the TCP connection without a proper end (after what was written has left)."""
    transport = request.transport
    if transport is None:
        return
    for _ in range(200):  # let written bytes reach the socket: abort() discards a write buffer
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    transport.abort()


# --- running it as a separate process -----------------------------------------------------------------


class EmulatorProcess:
    """`python -m voice.emulators.elevenlabs` in a subprocess: for tests and benchmarks that need it out of process.

    `with EmulatorProcess("--ttfb-ms", "50") as emu: emu.url ...`; drive it over HTTP (`/_emulator/...`).
    """

    def __init__(self, *args: str, host: str = "127.0.0.1", port: int = 0, env: dict[str, str] | None = None,
                 start_timeout_s: float = 20.0) -> None:
        self.args = [sys.executable, "-m", "voice.emulators.elevenlabs", "--host", host, "--port", str(port), *args]
        self.env = env
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, bufsize=0, env=self.env)
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        output = b""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    break
                output += data
                for line in output.decode(errors="replace").splitlines():
                    if line.startswith("listening on "):
                        self.url = line.split()[-1]
                        return self.url
            elif self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the emulator did not start: {' '.join(self.args)}; it said {output[-500:]!r}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- command line ---------------------------------------------------------------------------------------


class EmulatorSettings(EnvSettings):
    """What the emulator reads from the environment (and `.env`); its flags win over them."""

    port: Port = setting("EMULATOR_PORT", 8765, "port; 0 picks a free one")
    api_key: SecretStr = setting("ELEVENLABS_API_KEY", SecretStr(""),
                                 "the one accepted API key; unset: any non-empty key")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=_port, default=None,
                        help="port; 0 picks a free one [env EMULATOR_PORT; default 8765]")
    parser.add_argument("--api-key", default=None,
                        help="the one accepted API key [env ELEVENLABS_API_KEY; unset: any non-empty key]")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve https/wss")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    defaults = Knobs()
    parser.add_argument("--ttfb-ms", type=float, default=defaults.ttfb_ms, help="delay before the first audio byte")
    parser.add_argument("--realtime-factor", type=float, default=defaults.realtime_factor,
                        help="send audio at this multiple of real time (0: as fast as possible)")
    parser.add_argument("--chunk-bytes", type=int, default=defaults.chunk_bytes, help="audio bytes per chunk")
    parser.add_argument("--odd-chunks", action="store_true", help="odd chunk sizes that split samples")
    parser.add_argument("--max-concurrent", type=int, default=0, help="429 above this many generations (0: no limit)")
    parser.add_argument("--inactivity-timeout", type=float, default=defaults.ws_inactivity_timeout_s,
                        help="WebSocket inactivity timeout when the URL gives none [20]")
    parser.add_argument("--knobs", default="", help="JSON object of further knobs")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                        help="log level (logs go to stderr) [env LOG_LEVEL; default info]")


def _port(raw: str) -> int:
    """--port is checked as EMULATOR_PORT is, and its error names the flag."""
    try:
        return EmulatorSettings.load({}, port=raw).port
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _knobs_from_args(args: argparse.Namespace) -> Knobs:
    knobs = Knobs()
    knobs.update({
        "ttfb_ms": args.ttfb_ms, "realtime_factor": args.realtime_factor, "chunk_bytes": args.chunk_bytes,
        "odd_chunks": args.odd_chunks, "max_concurrent": args.max_concurrent,
        "ws_inactivity_timeout_s": args.inactivity_timeout,
    })
    knobs.update_json(args.knobs)
    return knobs


async def _serve(args: argparse.Namespace) -> None:
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    emulator = Emulator(api_key=args.api_key or None, knobs=_knobs_from_args(args), ssl_context=context)
    await emulator.serve_until_signalled(args.host, args.port)


def run(args: argparse.Namespace) -> int:
    """stdout carries only the "listening on URL" line that EmulatorProcess waits for; logs go to stderr,
    configured by the entry point (`voice-bridge emulator`, or `python -m` below)."""
    settings = EmulatorSettings.load(port=args.port, api_key=args.api_key)  # ConfigError: exit status 2
    args.port, args.api_key = settings.port, settings.api_key.get_secret_value()
    try:
        asyncio.run(_serve(args))
    except (ValueError, OSError) as exc:
        print(f"voice-bridge emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # `python -m voice.emulators.elevenlabs`, used by EmulatorProcess
    _parser = argparse.ArgumentParser(prog="python -m voice.emulators.elevenlabs", description=__doc__.splitlines()[0])
    configure_parser(_parser)
    _args = _parser.parse_args()
    try:
        configure_stderr_logs(_args.log_level)
        sys.exit(run(_args))
    except ConfigError as _exc:
        print(f"{_parser.prog}: configuration error: {_exc}", file=sys.stderr)
        sys.exit(2)
