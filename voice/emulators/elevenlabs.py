"""A local ElevenLabs-compatible server for tests and the offline demo (`voice-bridge emulator`).

It speaks the real API on one host and port (aiohttp), with the same validation and error bodies:
- `POST /v1/text-to-speech/{voice_id}/stream`: chunked raw audio, response headers as ElevenLabs sends them;
- `POST /v1/text-to-speech/{voice_id}`: the same audio in one body;
- `GET  /v1/text-to-speech/{voice_id}/stream-input`: the input-streaming WebSocket (first message, text
  pieces, flush, keep-alive `{"text": " "}`, end of input `{"text": ""}` -> rest of the audio,
  `{"audio": null, "isFinal": true}`, close 1000; bad key -> close 1008 after the handshake; inactivity
  timeout -> `input_timeout_exceeded` frame and close 1008);
- `POST /v1/text-to-speech/{voice_id}/with-timestamps` (one JSON body: `audio_base64`, `alignment`,
  `normalized_alignment`) and `.../stream/with-timestamps` (one such JSON line per audio chunk), the
  alignment in seconds from the start of the audio, `tone_code.CHAR_MS` per character;
- `GET /v1/voices`, `GET /v2/voices` (search), `GET /v1/voices/{voice_id}`, `GET /v1/models`, `GET /v1/user`,
  `GET /v1/user/subscription`: what the official SDK's `voices`, `models` and `user` clients call, in the
  shapes its models validate (every voice of the `voices` knob; the default model `eleven_flash_v2_5` first).
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
import math
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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import structlog
from aiohttp import WSMsgType, web
from pydantic import SecretStr

from voice.config import ConfigError, EnvSettings, Port, help_with_default, setting
from voice.emulators.control import ControlEndpoints, KnobsBase, configure_stderr_logs, port_flag, serve_app
from voice.emulators.tone_code import CHAR_MS, expected_frames, identify, synthesize
from voice.formats import COMPRESSED_FORMATS, OUTPUT_FORMATS, PCM_RATES, bytes_per_sample, source_rate

__all__ = ["Emulator", "EmulatorProcess", "Knobs", "Stats", "expected_frames", "identify", "synthesize",
           "DEFAULT_API_KEY", "DEFAULT_VOICES", "configure_parser", "run"]

log = structlog.get_logger(__name__)

DEFAULT_API_KEY = "emulator-key"
DEFAULT_VOICES = ("21m00Tcm4TlvDq8ikWAM", "JBFqnCBsd6RMkjVDRZzb", "EXAVITQu4vr4xnSDxMaL")
KNOWN_FORMATS = OUTPUT_FORMATS + COMPRESSED_FORMATS  # every format the real API accepts
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
    # `text`, `text_at` (the message that completed the text arrived: its flush, a full chunk schedule or the
    # end of input) and `first_audio_at` (its first audio message went out); time.monotonic(), comparable
    # across processes, so a benchmark can subtract what the service itself took
    ws_close_codes: Counter = dataclasses.field(default_factory=Counter)  # close codes the emulator sent
    ws_first_messages: deque = dataclasses.field(default_factory=lambda: deque(maxlen=100))
    ws_queries: deque = dataclasses.field(default_factory=lambda: deque(maxlen=100))
    characters: int = 0  # characters billed (HTTP text and WebSocket generated text)
    texts: Counter = dataclasses.field(default_factory=Counter)  # generated text -> times
    concurrent: int = 0
    max_concurrent_seen: int = 0
    requests: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))  # recent HTTP requests
    reads: Counter = dataclasses.field(default_factory=Counter)  # account/catalogue GETs by route, e.g.
    # "GET /v1/user" (what a preflight check or the SDK asked), whatever their outcome

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
            "reads": dict(self.reads),
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
        # hooks for endpoints served beside TTS (voice.emulators.stt.mount_stt): routes added at start(),
        # coroutines awaited at stop() before the server shuts down
        self.extra_routes: list[web.RouteDef] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self._started_unix = int(time.time())  # the account's `created_at` (user endpoints)

    # --- life cycle -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Emulator:
        app = web.Application(client_max_size=4 * 2**20)
        app.add_routes(
            [
                web.post("/v1/text-to-speech/{voice_id}/stream", self._http_stream),
                web.post("/v1/text-to-speech/{voice_id}", self._http_convert),
                web.get("/v1/text-to-speech/{voice_id}/stream-input", self._websocket),
                *self._sdk_routes(),
                *self.control_routes(),
                *self.extra_routes,
            ]
        )
        self._runner, self.port = await serve_app(app, host, port, self.ssl_context)
        self.host = host
        self._fail_left = self.knobs.fail_count
        log.debug("emulator_started", url=self.url)
        return self

    async def stop(self) -> None:
        for hook in self.on_stop:
            await hook()
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
        if output_format not in OUTPUT_FORMATS:
            raise _Rejected(
                422, "unsupported_output_format",
                f"The emulator produces only {', '.join(OUTPUT_FORMATS)}, not {output_format!r}.",
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

    async def _http_tts(self, request: web.Request, *, streaming: bool,
                        timestamps: bool = False) -> web.StreamResponse:
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
            response.content_type = "application/json" if timestamps else CONTENT_TYPES.get(output_format,
                                                                                              "audio/pcm")
            body = _timestamped_body(text.strip(), audio) if timestamps and not streaming else None
            if streaming:
                response.enable_chunked_encoding()
            else:
                response.content_length = len(audio if body is None else body)
            try:
                await response.prepare(request)
                if body is not None:
                    await self._send_http_body(request, response, body, entry)
                elif timestamps:
                    await self._send_timestamped_stream(request, response, text.strip(), audio, output_format,
                                                        entry)
                else:
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

    # --- the rest of what the official SDK calls: timestamps, voices, models, user -----------------------------
    # (kept apart from the streaming paths the bridge uses; the alignment follows `tone_code.CHAR_MS`)

    def _sdk_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/text-to-speech/{voice_id}/with-timestamps", self._http_convert_with_timestamps),
            web.post("/v1/text-to-speech/{voice_id}/stream/with-timestamps", self._http_stream_with_timestamps),
            web.get("/v1/voices", self._get_voices),
            web.get("/v2/voices", self._search_voices),
            web.get("/v1/voices/{voice_id}", self._get_voice),
            web.get("/v1/models", self._get_models),
            web.get("/v1/user", self._get_user),
            web.get("/v1/user/subscription", self._get_subscription),
        ]

    async def _http_convert_with_timestamps(self, request: web.Request) -> web.StreamResponse:
        return await self._http_tts(request, streaming=False, timestamps=True)

    async def _http_stream_with_timestamps(self, request: web.Request) -> web.StreamResponse:
        return await self._http_tts(request, streaming=True, timestamps=True)

    async def _send_http_body(self, request: web.Request, response: web.StreamResponse, body: bytes,
                              entry: dict[str, Any]) -> None:
        """One JSON body (`convert_with_timestamps`); `abort_after_bytes` cuts it (counted in body bytes)."""
        abort_after = self.knobs.abort_after_bytes
        entry["first_byte_at"] = time.monotonic()
        if 0 <= abort_after < len(body):
            await response.write(body[:abort_after])
            entry["aborted_after"] = abort_after
            await _abort(request)
            return
        await response.write(body)
        entry["bytes"] = len(body)
        await response.write_eof()

    async def _send_timestamped_stream(self, request: web.Request, response: web.StreamResponse, text: str,
                                       audio: bytes, output_format: str, entry: dict[str, Any]) -> None:
        """`stream_with_timestamps`: one JSON line per audio chunk (chunking, pacing and the abort knob as for
        the raw stream; an abort cuts the line of the chunk it falls in)."""
        bytes_per_s = _bytes_per_second(output_format)
        abort_after = self.knobs.abort_after_bytes
        start = time.monotonic()
        sent = 0
        for chunk in self._chunks(audio):
            line = (json.dumps(_timestamped_chunk(text, chunk, sent, bytes_per_s)) + "\n").encode()
            if 0 <= abort_after < sent + len(chunk):
                if abort_after > sent:
                    await response.write(line[: len(line) // 2])
                entry["aborted_after"] = abort_after
                await _abort(request)
                return
            await self._pace(start, sent, bytes_per_s)
            if sent == 0:
                entry["first_byte_at"] = time.monotonic()
            await response.write(line)
            sent += len(chunk)
        entry["bytes"] = sent
        await response.write_eof()

    async def _read(self, request: web.Request, answer: Callable[[], Any]) -> web.Response:
        """A catalogue or account GET: counted in `stats.reads`, the key checked as for synthesis (401
        `invalid_api_key`), then `answer()` as JSON, or its `_Rejected` in ElevenLabs' error shape.
        The failure knobs (`fail_status`) apply to synthesis only, so a preflight check cannot use them up."""
        resource = request.match_info.route.resource
        self.stats.reads[f"{request.method} {resource.canonical if resource else request.path}"] += 1
        try:
            if not self._key_ok(request.headers.get("xi-api-key")):
                raise _Rejected(401, "invalid_api_key", "Invalid API key")
            return web.json_response(answer())
        except _Rejected as rejected:
            return web.json_response(rejected.body(), status=rejected.status)

    async def _get_voices(self, request: web.Request) -> web.Response:
        return await self._read(request, lambda: {"voices": [_voice_json(v) for v in self.knobs.voices]})

    async def _get_voice(self, request: web.Request) -> web.Response:
        def answer() -> dict[str, Any]:
            voice_id = request.match_info["voice_id"]
            if voice_id not in self.knobs.voices:
                raise _Rejected(404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found.")
            return _voice_json(voice_id)

        return await self._read(request, answer)

    async def _search_voices(self, request: web.Request) -> web.Response:
        """`GET /v2/voices` (the SDK's `voices.search`): `search`, `voice_ids`, `page_size` and
        `next_page_token` work; the other filters are accepted and match every voice of the emulator."""
        def answer() -> dict[str, Any]:
            query = request.query
            page_size = _query_int(query, "page_size", 10, 1, 100)
            offset = _query_int(query, "next_page_token", 0, 0, None)
            term = query.get("search", "").lower()
            wanted = set(query.getall("voice_ids", []))
            voices = [_voice_json(v) for v in self.knobs.voices if not wanted or v in wanted]
            voices = [v for v in voices if term in f"{v['name']} {v['description']}".lower()]
            page = voices[offset: offset + page_size]
            more = offset + page_size < len(voices)
            return {"voices": page, "has_more": more, "total_count": len(voices),
                    "next_page_token": str(offset + page_size) if more else None}

        return await self._read(request, answer)

    async def _get_models(self, request: web.Request) -> web.Response:
        return await self._read(request, lambda: [dict(m) for m in MODELS])

    async def _get_user(self, request: web.Request) -> web.Response:
        return await self._read(request, lambda: {
            "user_id": "emulator-user", "workspace_id": "emulator-workspace",
            "subscription": self._subscription_json(extended=False), "is_new_user": False,
            "can_use_delayed_payment_methods": False, "is_onboarding_completed": True,
            "is_onboarding_checklist_completed": True, "show_compliance_terms": False, "first_name": "Emulator",
            "is_api_key_hashed": False, "xi_api_key_preview": None, "referral_link_code": None,
            "partnerstack_partner_default_link": None, "created_at": self._started_unix,
            "seat_type": "workspace_admin",
        })

    async def _get_subscription(self, request: web.Request) -> web.Response:
        return await self._read(request, lambda: self._subscription_json(extended=True))

    def _subscription_json(self, *, extended: bool) -> dict[str, Any]:
        """The account as the emulator bills it: `character_count` is `stats.characters`, `character_limit`
        the `character_quota` knob (unset: UNLIMITED_CHARACTERS); a Creator-tier account otherwise."""
        quota = self.knobs.character_quota
        data: dict[str, Any] = {
            "tier": "creator", "character_count": self.stats.characters,
            "character_limit": quota if quota >= 0 else UNLIMITED_CHARACTERS,
            "max_character_limit_extension": 0, "max_credit_limit_extension": 0,
            "can_extend_character_limit": False, "allowed_to_extend_character_limit": False,
            "next_character_count_reset_unix": self._started_unix + 30 * 86400,
            "voice_slots_used": 0, "professional_voice_slots_used": 0,
            "professional_voice_slots_used_in_workspace": 0, "voice_limit": 30, "max_voice_add_edits": 95,
            "voice_add_edit_counter": 0, "professional_voice_limit": 1, "can_extend_voice_limit": False,
            "can_use_instant_voice_cloning": True, "can_use_professional_voice_cloning": True,
            "currency": "usd", "current_overage": {"amount": "0", "currency": "usd"}, "status": "active",
            "billing_period": "monthly_period", "character_refresh_period": "monthly_period",
        }
        if extended:
            data.update({"next_invoice": None, "open_invoices": [], "has_open_invoices": False})
        return data


class _Session:
    """One `stream-input` WebSocket: reads client messages, queues texts, a sender task speaks them."""

    def __init__(self, emulator: Emulator, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.emu = emulator
        self.request = request
        self.ws = ws
        query = request.query
        self.output_format = query.get("output_format", DEFAULT_FORMAT)
        self.auto_mode = query.get("auto_mode", "false").lower() == "true"
        self.queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()
        self.received_at = 0.0  # time.monotonic() of the client message being handled
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
            except TimeoutError:
                await self.fail(1008, "input_timeout_exceeded", INACTIVITY_MESSAGE.format(timeout=int(timeout)))
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type is not WSMsgType.TEXT:
                await self.fail(1008, "invalid_input_message", INVALID_MESSAGE)
                return
            self.received_at = time.monotonic()
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
            self.queue.put_nowait((text.strip(), self.received_at))

    async def _send_audio(self) -> None:
        """Speak queued texts in order; after the end of input: `isFinal`, then close 1000."""
        with contextlib.suppress(ConnectionResetError):  # the client went away
            await self._speak_queue()

    async def _speak_queue(self) -> None:
        emu = self.emu
        first = True
        while True:
            item = await self.queue.get()
            if item is None:
                break
            text, text_at = item
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
                if not await self._send_generation(text, first, text_at):
                    return
            finally:
                emu.stats.concurrent -= 1
            first = False
        with contextlib.suppress(Exception):
            await self.ws.send_str(json.dumps({"audio": None, "isFinal": True, "normalizedAlignment": None,
                                               "alignment": None}))
        await self.close(1000)

    async def _send_generation(self, text: str, first: bool, text_at: float) -> bool:
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
                    await self._send_chunk(text, chunk[: knobs.abort_after_bytes - sent], sent, text_at)
                await _abort(self.request)
                return False
            if first and knobs.ws_error_code > 0 and sent >= knobs.ws_error_after_bytes:
                await self.fail(knobs.ws_error_code, "internal_error", "An internal server error occurred.")
                return False
            await self.emu._pace(start, sent, bytes_per_s)
            await self._send_chunk(text, chunk, sent, text_at)
            sent += len(chunk)
        return True

    def _chunks_of(self, audio: bytes) -> Iterator[bytes]:
        return self.emu._chunks(audio)

    async def _send_chunk(self, text: str, chunk: bytes, offset: int, text_at: float) -> None:
        message: dict[str, Any] = {"audio": base64.b64encode(chunk).decode("ascii"), "isFinal": None}
        if self.emu.knobs.alignment:
            alignment = _alignment(text, offset, len(chunk), _bytes_per_second(self.output_format))
            message["alignment"] = alignment
            message["normalizedAlignment"] = alignment
        payload = json.dumps(message)
        self.emu.stats.ws_max_message_bytes = max(self.emu.stats.ws_max_message_bytes, len(payload))
        if offset == 0:
            self.emu.stats.ws_audio_log.append({"text": text, "text_at": text_at, "first_audio_at": time.monotonic()})
        await self.ws.send_str(payload)


def _peer(request: web.Request) -> str | None:
    """host:port of the client: shows whether a client reused its keep-alive connection."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else None


def _bytes_per_second(output_format: str) -> int:
    return source_rate(output_format) * bytes_per_sample(output_format)


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


# --- what the SDK-facing endpoints answer ------------------------------------------------------------------

UNLIMITED_CHARACTERS = 10_000_000
"""`character_limit` reported when the `character_quota` knob is unset (-1)."""
VOICE_NAMES = {"21m00Tcm4TlvDq8ikWAM": "Rachel", "JBFqnCBsd6RMkjVDRZzb": "George", "EXAVITQu4vr4xnSDxMaL": "Sarah"}
_V25_LANGUAGES = (
    ("en", "English"), ("ja", "Japanese"), ("zh", "Chinese"), ("de", "German"), ("hi", "Hindi"), ("fr", "French"),
    ("ko", "Korean"), ("pt", "Portuguese"), ("it", "Italian"), ("es", "Spanish"), ("id", "Indonesian"),
    ("nl", "Dutch"), ("tr", "Turkish"), ("fil", "Filipino"), ("pl", "Polish"), ("sv", "Swedish"),
    ("bg", "Bulgarian"), ("ro", "Romanian"), ("ar", "Arabic"), ("cs", "Czech"), ("el", "Greek"),
    ("fi", "Finnish"), ("hr", "Croatian"), ("ms", "Malay"), ("sk", "Slovak"), ("da", "Danish"), ("ta", "Tamil"),
    ("uk", "Ukrainian"), ("ru", "Russian"), ("hu", "Hungarian"), ("no", "Norwegian"), ("vi", "Vietnamese"),
)
"""The 32 languages of the v2.5 models; multilingual v2 lacks the last three (hu, no, vi)."""


def _model(model_id: str, name: str, description: str, languages: Sequence[tuple[str, str]], max_text: int,
           cost: float, group: str) -> dict[str, Any]:
    return {
        "model_id": model_id, "name": name, "can_be_finetuned": True, "can_do_text_to_speech": True,
        "can_do_voice_conversion": False, "can_use_style": model_id == "eleven_multilingual_v2",
        "can_use_speaker_boost": True, "serves_pro_voices": False, "token_cost_factor": cost,
        "description": description, "requires_alpha_access": False,
        "max_characters_request_free_user": min(max_text, 2500), "max_characters_request_subscribed_user": max_text,
        "maximum_text_length_per_request": max_text,
        "languages": [{"language_id": code, "name": lang} for code, lang in languages],
        "model_rates": {"character_cost_multiplier": cost}, "concurrency_group": group,
    }


MODELS: tuple[dict[str, Any], ...] = (
    _model("eleven_flash_v2_5", "Eleven Flash v2.5", "Low-latency multilingual model (the bridge's default).",
           _V25_LANGUAGES, 40000, 0.5, "turbo"),
    _model("eleven_turbo_v2_5", "Eleven Turbo v2.5", "Multilingual model balancing quality and latency.",
           _V25_LANGUAGES, 40000, 0.5, "turbo"),
    _model("eleven_multilingual_v2", "Eleven Multilingual v2", "The most life-like multilingual model.",
           _V25_LANGUAGES[:29], 10000, 1.0, "standard"),
    _model("eleven_flash_v2", "Eleven Flash v2", "Low-latency model, English only.", _V25_LANGUAGES[:1], 30000,
           0.5, "turbo"),
    _model("eleven_turbo_v2", "Eleven Turbo v2", "English-only model balancing quality and latency.",
           _V25_LANGUAGES[:1], 30000, 0.5, "turbo"),
)
"""`GET /v1/models`. The emulator speaks every model_id alike (tones); ids, languages and limits as documented,
rates and concurrency groups plausible (unconfirmed)."""


def _voice_json(voice_id: str) -> dict[str, Any]:
    """A premade voice in the shape of the SDK's `Voice` (every voice of the `voices` knob)."""
    name = VOICE_NAMES.get(voice_id, f"Emulated {voice_id}")
    return {
        "voice_id": voice_id, "name": name, "samples": None, "category": "premade", "fine_tuning": None,
        "labels": {"accent": "tone-coded", "description": "emulated", "use_case": "testing"},
        "description": f"{name}, as the emulator speaks: {CHAR_MS} ms of tones per character that encode the text.",
        "preview_url": None, "available_for_tiers": [], "settings": None, "sharing": None,
        "high_quality_base_model_ids": [m["model_id"] for m in MODELS],
        "verified_languages": [], "collection_ids": [], "safety_control": None,
        "voice_verification": {"requires_verification": False, "is_verified": False, "verification_failures": [],
                               "verification_attempts_count": 0},
        "permission_on_resource": None, "is_owner": False, "is_legacy": False, "is_mixed": False,
        "created_at_unix": None,
    }


def _query_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    """An integer query parameter, or a 422 in FastAPI's shape naming it."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Rejected(422, "validation_error", f"bad {name}", detail=[
            {"type": "int_parsing", "loc": ["query", name],
             "msg": "Input should be a valid integer, unable to parse string as an integer", "input": raw}]) from None
    if value < lo or (hi is not None and value > hi):
        bound = "greater_than_equal" if value < lo else "less_than_equal"
        limit = lo if value < lo else hi
        raise _Rejected(422, "validation_error", f"bad {name}", detail=[
            {"type": bound, "loc": ["query", name],
             "msg": f"Input should be {'greater' if value < lo else 'less'} than or equal to {limit}",
             "input": raw, "ctx": {"ge" if value < lo else "le": limit}}])
    return value


def _char_alignment(text: str, first: int, last: int) -> dict[str, list[Any]] | None:
    """Characters `text[first:last]` in the HTTP shape: start and end in seconds from the audio's start."""
    chars = list(text[first:last])
    if not chars:
        return None
    return {
        "characters": chars,
        "character_start_times_seconds": [round((first + i) * CHAR_MS / 1000, 3) for i in range(len(chars))],
        "character_end_times_seconds": [round((first + i + 1) * CHAR_MS / 1000, 3) for i in range(len(chars))],
    }


def _timestamped_chunk(text: str, chunk: bytes, offset: int, bytes_per_s: int) -> dict[str, Any]:
    """One `stream_with_timestamps` line: the chunk and the characters whose audio starts in it (times from
    the start of the request's audio, not of the chunk)."""
    per_char = bytes_per_s * CHAR_MS // 1000
    first = -(-offset // per_char)
    last = -(-(offset + len(chunk)) // per_char)
    alignment = _char_alignment(text, first, last)
    return {"audio_base64": base64.b64encode(chunk).decode("ascii"), "alignment": alignment,
            "normalized_alignment": alignment}


def _timestamped_body(text: str, audio: bytes) -> bytes:
    """The `convert_with_timestamps` body: all the audio in base64 and every character's times."""
    alignment = _char_alignment(text, 0, len(text))
    return json.dumps({"audio_base64": base64.b64encode(audio).decode("ascii"), "alignment": alignment,
                       "normalized_alignment": alignment}).encode()


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
                 start_timeout_s: float = 20.0, module: str = "voice.emulators.elevenlabs") -> None:
        """`module`: another emulator with the same command line (`--host`, `--port`, "listening on URL"),
        e.g. `voice.emulators.stt` alone, in a process of its own."""
        self.args = [sys.executable, "-m", module, "--host", host, "--port", str(port), *args]
        self.env = env
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

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


HELP_DESCRIPTION = (
    "Run the local ElevenLabs-compatible server: text to speech over HTTP (stream, convert, with timestamps) "
    "and the stream-input WebSocket, voices, models and user, answering as the real API does, with a voice of "
    "tones that encode the text. It prints 'listening on URL' when ready: that URL is the base URL to give "
    "clients, e.g. http://127.0.0.1:8765 for ELEVENLABS_BASE_URL (the bridge) or for the "
    "official SDK, ElevenLabs(api_key=KEY, base_url=\"http://127.0.0.1:8765\"). The SDK's realtime WebSocket "
    "client forces wss://: serve TLS (--tls-cert, --tls-key) for it. Faults and timing are knobs, also settable "
    "at run time: GET/POST /_emulator/knobs, GET /_emulator/stats, POST /_emulator/reset."
)


class EmulatorSettings(EnvSettings):
    """What the emulator reads from the environment (and `.env`); its flags win over them."""

    port: Port = setting("EMULATOR_PORT", 8765, "port; 0 picks a free one")
    api_key: SecretStr = setting("ELEVENLABS_API_KEY", SecretStr(""),
                                 "the one accepted API key; unset: any non-empty key")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP_DESCRIPTION
    defaults = Knobs()
    parser.add_argument("--host", default="127.0.0.1", help=help_with_default("address to listen on", "127.0.0.1"))
    parser.add_argument("--port", type=port_flag(EmulatorSettings), default=None,
                        help="port; 0 picks a free one [env EMULATOR_PORT; default 8765]")
    parser.add_argument("--api-key", default=None,
                        help="the one accepted API key; unset: any non-empty key "
                             "[env ELEVENLABS_API_KEY; default unset]")
    parser.add_argument("--voices", type=_voices, default=None, metavar="ID,...",
                        help="the voice ids it knows (others: 404 voice_not_found) [default "
                             f"{','.join(DEFAULT_VOICES)}, plus env ELEVENLABS_VOICE_ID when set]")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve https/wss; unset: http/ws")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--ttfb-ms", type=_non_negative, default=defaults.ttfb_ms,
                        help=help_with_default("delay before the first audio byte of each generation",
                                               defaults.ttfb_ms))
    parser.add_argument("--realtime-factor", type=_non_negative, default=defaults.realtime_factor,
                        help=help_with_default("send audio at this multiple of real time, 0 = as fast as possible",
                                               defaults.realtime_factor))
    parser.add_argument("--chunk-bytes", type=_whole(1), default=defaults.chunk_bytes,
                        help=help_with_default("audio bytes per HTTP chunk / WebSocket message", defaults.chunk_bytes))
    parser.add_argument("--odd-chunks", action="store_true",
                        help="odd chunk sizes that split 16-bit samples")
    parser.add_argument("--max-concurrent", type=_whole(0), default=defaults.max_concurrent,
                        help=help_with_default("429 above this many generations at once, 0 = no limit",
                                               defaults.max_concurrent))
    parser.add_argument("--inactivity-timeout", type=_non_negative, default=defaults.ws_inactivity_timeout_s,
                        help=help_with_default("WebSocket inactivity timeout in seconds when the URL gives none",
                                               defaults.ws_inactivity_timeout_s))
    parser.add_argument("--knobs", default="",
                        help="JSON object of further knobs, e.g. '{\"fail_status\": 503, \"fail_count\": 1}'; "
                             f"knobs: {', '.join(f.name for f in dataclasses.fields(Knobs))}")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="log level; logs go to stderr [env LOG_LEVEL; default info]")


def _non_negative(raw: str) -> float:
    """A knob option's number (argparse names the option when it is refused)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {raw!r}")
    return value


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {raw!r}")
        return value

    return parse


def _voices(raw: str) -> list[str]:
    voices = [v.strip() for v in raw.split(",") if v.strip()]
    if not voices:
        raise argparse.ArgumentTypeError("expected one or more voice ids separated by commas")
    return voices


def _default_voices() -> list[str]:
    """The premade voices, plus the bridge's configured one (ELEVENLABS_VOICE_ID) when it is another."""
    voices = list(DEFAULT_VOICES)
    configured = os.environ.get("ELEVENLABS_VOICE_ID", "").strip()
    if configured and configured not in voices:
        voices.append(configured)
    return voices


def _knobs_from_args(args: argparse.Namespace) -> Knobs:
    knobs = Knobs()
    knobs.update({
        "ttfb_ms": args.ttfb_ms, "realtime_factor": args.realtime_factor, "chunk_bytes": args.chunk_bytes,
        "odd_chunks": args.odd_chunks, "max_concurrent": args.max_concurrent,
        "ws_inactivity_timeout_s": args.inactivity_timeout,
        "voices": args.voices if args.voices is not None else _default_voices(),
    })
    knobs.update_json(args.knobs)
    return knobs


async def _serve(args: argparse.Namespace) -> None:
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    emulator = Emulator(api_key=args.api_key or None, knobs=_knobs_from_args(args), ssl_context=context)
    from voice.emulators.stt import mount_stt  # speech-to-text on the same URL and key

    mount_stt(emulator)
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
