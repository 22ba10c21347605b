"""A local speech-to-text server for tests and the demo: ElevenLabs Scribe realtime and OpenAI transcription.

It "recognises" the TTS emulator's tone encoding of text (`voice.emulators.tone_code`): a simulated caller
that sends the tone-coded audio of "да" (`voice-bridge call --say "да@2"`) is heard saying exactly "да".
Runs of sound between silences are words of the transcript, joined with a space.

- `GET /v1/speech-to-text/realtime` (WebSocket): the Scribe realtime protocol as the official SDK speaks
  it (docs/reference/elevenlabs-stt.md): `xi-api-key` header or `token` query, `model_id`, `audio_format`
  (pcm_8000 ... pcm_48000, ulaw_8000), `commit_strategy` (manual | vad), `vad_silence_threshold_secs`;
  `session_started`, then `partial_transcript` as audio arrives and `committed_transcript` on each commit
  (or, with `vad`, after that much silence following speech).
- `POST /v1/audio/transcriptions` (multipart `file` = WAV, `model`, `language`, `response_format`): OpenAI's
  transcription endpoint, so `STT_OPENAI_BASE_URL` can point at `<emulator>/v1`.

Mounted on the ElevenLabs emulator (`mount_stt`: same base URL and key as TTS, control under
`/_emulator/stt/...`), or alone (`python -m voice.emulators.stt`, control under `/_emulator/...`).
Knobs add latency and faults; `Stats` count what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import base64
import binascii
import contextlib
import dataclasses
import io
import json
import sys
import time
import uuid
import wave
from array import array
from collections import Counter, deque
from typing import Any, ClassVar

import structlog
from aiohttp import WSMsgType, web

from voice.audio import FRAME_BYTES, Resampler, convert_pcm, rms
from voice.emulators.control import ControlEndpoints, KnobsBase, serve_app
from voice.emulators.tone_code import SILENCE_RMS, SYMBOLS_PER_CHAR, _symbol
from voice.formats import OUTPUT_FORMATS, source_rate

__all__ = ["REALTIME_FORMATS", "STTEmulator", "STTKnobs", "STTStats", "ToneListener", "mount_stt"]

log = structlog.get_logger(__name__)

REALTIME_PATH = "/v1/speech-to-text/realtime"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
REALTIME_MODELS = ("scribe_v2_realtime", "scribe_v3_live")
# Scribe realtime takes every PCM format and mu-law (not A-law)
REALTIME_FORMATS = {fmt: source_rate(fmt) for fmt in OUTPUT_FORMATS if fmt != "alaw_8000"}
MAX_CHUNK_BYTES = 2**20  # unconfirmed limit: a bigger chunk gets chunk_size_exceeded


@dataclasses.dataclass
class STTKnobs(KnobsBase):
    """Latency and fault knobs, settable at run time (in-process or `POST .../knobs`)."""

    MINIMUMS: ClassVar[dict[str, int]] = {}

    session_delay_ms: float = 0.0  # before `session_started`
    partial_delay_ms: float = 0.0  # before each `partial_transcript`
    final_delay_ms: float = 0.0  # commit -> `committed_transcript` (also the OpenAI endpoint's answer time)
    partials: bool = True  # send partial transcripts
    vad_silence_s: float = 0.5  # server VAD: silence after speech that commits, when the URL gives none
    fail_status: int = 0  # > 0: refuse WebSocket upgrades and transcription requests with this HTTP status
    fail_count: int = -1  # how many refusals (-1: all)
    ws_error: str = ""  # a Scribe error `message_type` sent instead of the next committed transcript, then
    # the session closes (1011 for server errors, 1008 otherwise); e.g. "transcriber_error", "quota_exceeded"
    drop_after_chunks: int = -1  # >= 0: drop the connection (no close frame) after this many audio chunks
    transcript: str = ""  # when set, every transcript is this text instead of what the audio encodes


@dataclasses.dataclass
class STTStats:
    ws_connections: int = 0
    ws_open: int = 0
    audio_chunks: int = 0
    audio_bytes: int = 0
    commits: int = 0
    partials: int = 0
    ws_queries: deque = dataclasses.field(default_factory=lambda: deque(maxlen=100))
    ws_close_codes: Counter = dataclasses.field(default_factory=Counter)
    transcripts: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))  # committed texts
    commit_log: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))
    """Per committed transcript: `text`, `commit_at` (the commit message was received) and `final_at` (the
    `committed_transcript` went out), both `time.monotonic()` (CLOCK_MONOTONIC: comparable with the other
    processes' stamps on one machine), so a benchmark can subtract the time the service really took."""
    http_requests: int = 0
    http_status: Counter = dataclasses.field(default_factory=Counter)
    http_requests_log: deque = dataclasses.field(default_factory=lambda: deque(maxlen=100))

    def snapshot(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in data.items():
            if isinstance(value, deque):
                data[name] = list(value)
            elif isinstance(value, Counter):
                data[name] = {str(k): v for k, v in value.items()}
        return data


_KNOWN_FRAMES: dict[bytes, int] = {}
"""Frames already decoded: a caller's tone-coded frames repeat byte for byte (one per tone level), and the
DFT is the emulator's main cost (2 ms per 100 ms of speech; 100 speaking callers would need two cores)."""
_KNOWN_FRAMES_MAX = 8192


class ToneListener:
    """Incremental decoder of tone-coded 8 kHz s16le audio: each 20 ms frame is analysed once.

    `words` are the runs of sound heard so far (whole characters only); `text` joins them with a space.
    `silent_frames` counts the silent frames since the last sound (server VAD).
    """

    def __init__(self) -> None:
        self._buf = b""
        self._run: list[int] = []
        self.words: list[str] = []
        self.silent_frames = 0
        self.heard = False

    def feed(self, pcm: bytes) -> None:
        data = self._buf + pcm
        usable = len(data) - len(data) % FRAME_BYTES
        self._buf = data[usable:]
        for i in range(0, usable, FRAME_BYTES):
            frame = data[i:i + FRAME_BYTES]
            if rms(frame) >= SILENCE_RMS:
                symbol = _KNOWN_FRAMES.get(frame)
                if symbol is None:
                    samples = array("h")
                    samples.frombytes(frame)
                    if sys.byteorder == "big":  # pragma: no cover
                        samples.byteswap()
                    symbol = _symbol(samples[16:144])
                    if len(_KNOWN_FRAMES) < _KNOWN_FRAMES_MAX:
                        _KNOWN_FRAMES[frame] = symbol
                self._run.append(symbol)
                self.silent_frames = 0
                self.heard = True
            else:
                self._end_run()
                self.silent_frames += 1

    def _end_run(self) -> None:
        if self._run:
            word = _chars(self._run)
            if word:
                self.words.append(word)
            self._run = []

    @property
    def text(self) -> str:
        current = _chars(self._run)
        return " ".join([*self.words, current] if current else self.words)

    def commit(self) -> str:
        """The text so far; the listener starts afresh (a new segment)."""
        self._end_run()
        text = " ".join(self.words)
        self.words = []
        self.heard = False
        self.silent_frames = 0
        return text


def _chars(symbols: list[int]) -> str:
    out = []
    for i in range(0, len(symbols) - SYMBOLS_PER_CHAR + 1, SYMBOLS_PER_CHAR):
        a, b, c = symbols[i:i + SYMBOLS_PER_CHAR]
        out.append(chr((a << 10) | (b << 5) | c))
    return "".join(out)


def _to_8k(audio_format: str) -> Any:
    """A converter of one session's audio to 8 kHz s16le (`feed(bytes) -> bytes`)."""
    if audio_format == "ulaw_8000":
        class _Ulaw:
            def feed(self, data: bytes) -> bytes:
                return audioop.ulaw2lin(data, 2) if data else b""
        return _Ulaw()
    return Resampler(REALTIME_FORMATS[audio_format])


class STTEmulator(ControlEndpoints):
    """The speech-to-text emulator. Mount it (`mount_stt`) or run it alone (`start()`/`stop()`)."""

    def __init__(self, *, api_key: str | None = "emulator-key", knobs: STTKnobs | None = None) -> None:
        self.api_key = api_key
        self.knobs = knobs or STTKnobs()
        self._initial_knobs = STTKnobs()
        self._initial_knobs.update(self.knobs.as_dict())
        self.stats = STTStats()
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._websockets: set[web.WebSocketResponse] = set()
        self._fail_left = self.knobs.fail_count

    # --- life cycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://host:port, once started."""
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    def routes(self, control_prefix: str = "/_emulator") -> list[web.RouteDef]:
        return [
            web.get(REALTIME_PATH, self._realtime),
            web.post(TRANSCRIPTIONS_PATH, self._transcriptions),
            web.get(f"{control_prefix}/stats", self._get_stats),
            web.get(f"{control_prefix}/knobs", self._get_knobs),
            web.post(f"{control_prefix}/knobs", self._post_knobs),
            web.post(f"{control_prefix}/reset", self._post_reset),
        ]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> STTEmulator:
        app = web.Application(client_max_size=32 * 2**20)
        app.add_routes(self.routes())
        self._runner, self.port = await serve_app(app, host, port)
        self.host = host
        self._fail_left = self.knobs.fail_count
        return self

    async def close_websockets(self) -> None:
        for ws in list(self._websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"emulator stopping")

    async def stop(self) -> None:
        await self.close_websockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reset(self) -> None:
        self.stats = STTStats()
        self.knobs = STTKnobs()
        self.knobs.update(self._initial_knobs.as_dict())
        self._fail_left = self.knobs.fail_count

    def _key_ok(self, key: str | None) -> bool:
        return bool(key) and (self.api_key is None or key == self.api_key)

    def _take_failure(self) -> int:
        status = self.knobs.fail_status
        if status <= 0 or self._fail_left == 0:
            return 0
        if self._fail_left > 0:
            self._fail_left -= 1
        return status

    # --- Scribe realtime ----------------------------------------------------------------------------------

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.stats.ws_queries.append({"query": query})
        status = self._take_failure()
        if status:
            return web.json_response({"detail": {"status": _STATUS_CODES.get(status, "error"),
                                                 "message": f"emulated failure {status}"}}, status=status)
        problem = _check_query(query)
        ws = web.WebSocketResponse(max_msg_size=4 * 2**20)
        await ws.prepare(request)
        self.stats.ws_connections += 1
        self.stats.ws_open += 1
        self._websockets.add(ws)
        try:
            key = request.headers.get("xi-api-key") or query.get("token")
            if not self._key_ok(key):
                await self._error_close(ws, "auth_error", "Invalid API key", 1008)
            elif problem:
                await self._error_close(ws, "invalid_request", problem, 1008)
            else:
                await _RealtimeSession(self, ws, query).run()
        finally:
            self._websockets.discard(ws)
            self.stats.ws_open -= 1
        return ws

    async def _error_close(self, ws: web.WebSocketResponse, kind: str, message: str, code: int) -> None:
        with contextlib.suppress(Exception):
            await ws.send_json({"message_type": kind, "error": message})
            await ws.close(code=code, message=message[:120].encode())
        self.stats.ws_close_codes[code] += 1

    # --- OpenAI transcriptions ----------------------------------------------------------------------------

    async def _transcriptions(self, request: web.Request) -> web.Response:
        self.stats.http_requests += 1
        response = await self._transcribe_http(request)
        self.stats.http_status[response.status] += 1
        return response

    async def _transcribe_http(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not self._key_ok(key):
            return _openai_error(401, "Incorrect API key provided.", "invalid_api_key", "invalid_request_error")
        status = self._take_failure()
        if status:
            return _openai_error(status, f"emulated failure {status}", None,
                                 "server_error" if status >= 500 else "invalid_request_error")
        try:
            form = await request.post()
        except ValueError as exc:
            return _openai_error(400, f"could not parse multipart form: {exc}", None, "invalid_request_error")
        upload = form.get("file")
        model = form.get("model")
        self.stats.http_requests_log.append({k: str(v) for k, v in form.items() if k != "file"})
        if not isinstance(model, str) or not model:
            return _openai_error(400, "you must provide a model parameter", None, "invalid_request_error")
        if not isinstance(upload, web.FileField):
            return _openai_error(400, "you must provide a file parameter", None, "invalid_request_error")
        try:
            with wave.open(io.BytesIO(upload.file.read()), "rb") as wav:
                rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
                raw = wav.readframes(wav.getnframes())
            pcm = convert_pcm(raw, rate, width, channels)
        except (wave.Error, EOFError, ValueError) as exc:
            return _openai_error(400, f"Invalid file format: {exc}", None, "invalid_request_error")
        listener = ToneListener()
        listener.feed(pcm)
        text = self.knobs.transcript or listener.commit()
        if self.knobs.final_delay_ms:
            await asyncio.sleep(self.knobs.final_delay_ms / 1000)
        self.stats.transcripts.append(text)
        fmt = form.get("response_format", "json")
        if fmt == "text":
            return web.Response(text=text)
        body: dict[str, Any] = {"text": text}
        if fmt == "verbose_json":
            body.update(language=str(form.get("language") or "ru"), duration=len(pcm) / 16000, segments=[])
        return web.json_response(body)


_STATUS_CODES = {401: "invalid_api_key", 402: "payment_required", 403: "missing_permissions",
                 429: "rate_limit_exceeded", 500: "internal_server_error", 503: "system_busy"}


def _openai_error(status: int, message: str, code: str | None, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status)


def _check_query(query: dict[str, str]) -> str:
    """The problem with a realtime URL's query, or ""."""
    model = query.get("model_id")
    if not model:
        return "model_id is required"
    if model not in REALTIME_MODELS:
        return f"unknown model_id {model!r}"
    fmt = query.get("audio_format", "pcm_16000")
    if fmt not in REALTIME_FORMATS:
        return f"unsupported audio_format {fmt!r}"
    if query.get("commit_strategy", "manual") not in ("manual", "vad"):
        return f"unknown commit_strategy {query.get('commit_strategy')!r}"
    if "vad_silence_threshold_secs" in query:
        try:
            value = float(query["vad_silence_threshold_secs"])
        except ValueError:
            return "vad_silence_threshold_secs must be a number"
        if not 0.3 <= value <= 3.0:
            return "vad_silence_threshold_secs must be between 0.3 and 3.0"
    return ""


class _RealtimeSession:
    def __init__(self, emulator: STTEmulator, ws: web.WebSocketResponse, query: dict[str, str]) -> None:
        self.emu = emulator
        self.ws = ws
        self.query = query
        self.audio_format = query.get("audio_format", "pcm_16000")
        self.vad = query.get("commit_strategy", "manual") == "vad"
        silence = float(query.get("vad_silence_threshold_secs") or emulator.knobs.vad_silence_s)
        self.vad_frames = max(1, round(silence * 50))
        self.converter = _to_8k(self.audio_format)
        self.listener = ToneListener()
        self.last_partial = ""
        self.chunks = 0
        self.out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run(self) -> None:
        knobs = self.emu.knobs
        if knobs.session_delay_ms:
            await asyncio.sleep(knobs.session_delay_ms / 1000)
        config = {"sample_rate": REALTIME_FORMATS[self.audio_format], "audio_format": self.audio_format,
                  "language_code": self.query.get("language_code"), "model_id": self.query.get("model_id"),
                  "commit_strategy": "vad" if self.vad else "manual",
                  "vad_silence_threshold_secs": self.vad_frames / 50}
        await self.ws.send_json({"message_type": "session_started", "session_id": uuid.uuid4().hex,
                                 "config": config})
        writer = asyncio.create_task(self._write())
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if not await self._on_message(msg.data, time.monotonic()):
                    return
        finally:
            self.out.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
            if self.ws.close_code is not None:
                self.emu.stats.ws_close_codes[self.ws.close_code] += 1

    async def _write(self) -> None:
        """Sends results in order, each after its configured delay (a slow recognizer stays ordered)."""
        while True:
            item = await self.out.get()
            if item is None:
                return
            delay = item.pop("_delay_ms", 0.0)
            if delay:
                await asyncio.sleep(delay / 1000)
            commit_at = item.pop("_commit_at", None)
            if commit_at is not None:
                self.emu.stats.commit_log.append({"text": item["text"], "commit_at": commit_at,
                                                  "final_at": time.monotonic()})
            with contextlib.suppress(Exception):
                await self.ws.send_json(item)

    async def _on_message(self, raw: str, received_at: float) -> bool:
        knobs = self.emu.knobs
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            await self.emu._error_close(self.ws, "input_error", "message is not JSON", 1008)
            return False
        if not isinstance(data, dict) or data.get("message_type") != "input_audio_chunk":
            await self.emu._error_close(
                self.ws,
                "input_error",
                f"unknown message_type {data.get('message_type') if isinstance(data, dict) else None!r}",
                1008,
            )
            return False
        try:
            audio = base64.b64decode(data.get("audio_base_64") or "", validate=True)
        except (binascii.Error, ValueError):
            await self.emu._error_close(self.ws, "input_error", "audio_base_64 is not base64", 1008)
            return False
        if len(audio) > MAX_CHUNK_BYTES:
            await self.emu._error_close(self.ws, "chunk_size_exceeded", "audio chunk too large", 1008)
            return False
        if audio:
            self.chunks += 1
            self.emu.stats.audio_chunks += 1
            self.emu.stats.audio_bytes += len(audio)
            if 0 <= knobs.drop_after_chunks < self.chunks:
                self.ws._writer.transport.abort()  # type: ignore[union-attr]  # no close frame: the client sees 1006
                return False
            self.listener.feed(self.converter.feed(audio))
            text = knobs.transcript or self.listener.text
            if knobs.partials and text and text != self.last_partial and self.listener.heard:
                self.last_partial = text
                self.emu.stats.partials += 1
                self.out.put_nowait({"message_type": "partial_transcript", "text": text,
                                     "_delay_ms": knobs.partial_delay_ms})
        commit = data.get("commit") is True
        if self.vad and self.listener.heard and self.listener.silent_frames >= self.vad_frames:
            commit = True
        if commit:
            return await self._commit(received_at)
        return True

    async def _commit(self, received_at: float) -> bool:
        knobs = self.emu.knobs
        text = self.listener.commit()
        if knobs.transcript:
            text = knobs.transcript
        self.last_partial = ""
        self.emu.stats.commits += 1
        if knobs.ws_error:
            kind, knobs.ws_error = knobs.ws_error, ""
            code = 1011 if kind in ("transcriber_error", "resource_exhausted", "error") else 1008
            if knobs.final_delay_ms:
                await asyncio.sleep(knobs.final_delay_ms / 1000)
            await self.emu._error_close(self.ws, kind, f"emulated {kind}", code)
            return False
        self.emu.stats.transcripts.append(text)
        self.out.put_nowait({"message_type": "committed_transcript", "text": text,
                             "_delay_ms": knobs.final_delay_ms, "_commit_at": received_at})
        return True


def mount_stt(emulator: Any, stt: STTEmulator | None = None) -> STTEmulator:
    """Serve the STT endpoints from the ElevenLabs emulator (same URL and key; control at /_emulator/stt/)."""
    stt = stt or STTEmulator(api_key=emulator.api_key)
    emulator.extra_routes.extend(stt.routes("/_emulator/stt"))
    emulator.on_stop.append(stt.close_websockets)
    return stt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voice.emulators.stt", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--api-key", default="emulator-key", help="the one accepted key ('' accepts any)")
    parser.add_argument("--knobs", default="", help="JSON object of knobs")
    args = parser.parse_args(argv)
    knobs = STTKnobs()
    try:
        knobs.update_json(args.knobs)
    except ValueError as exc:
        print(f"voice.emulators.stt: {exc}", file=sys.stderr)
        return 2
    emulator = STTEmulator(api_key=args.api_key or None, knobs=knobs)
    try:
        asyncio.run(emulator.serve_until_signalled(args.host, args.port))
    except OSError as exc:
        print(f"voice.emulators.stt: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
