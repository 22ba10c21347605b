"""ElevenLabs Scribe v2 Realtime over its WebSocket (`/v1/speech-to-text/realtime`), one session per call.

The wire protocol is recorded in docs/reference/elevenlabs-stt.md. In short: connect with `xi-api-key` and
the query (`model_id`, `audio_format`, `commit_strategy`, `language_code`, ...); the server says
`session_started`; we send `input_audio_chunk` messages (base64 audio, `commit`, `sample_rate`); it answers
`partial_transcript` and, on a commit, `committed_transcript`. Audio goes out as AudioSocket delivered it
(`pcm_8000`, `pcm_16000` or `ulaw_8000`: Scribe takes them all), `chunk_ms` of it per message.

With `commit=manual` our endpointer commits at the end of each utterance (its silence is ours to set, and
a cough is never committed); with `commit=vad` Scribe's server VAD commits and our endpointer only reports.
Retries: only the connection (refused, 429, 5xx) before the session started; a session that fails later
is reported, since replaying lost audio would answer a question the caller has moved on from.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import deque
from typing import Any
from urllib.parse import urlencode

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from voice.stt.base import RecognizerBase
from voice.stt.config import STTConfig
from voice.stt.endpointer import UtteranceEnd
from voice.stt.errors import (
    FATAL_SCRIBE_ERRORS,
    WARNING_SCRIBE_MESSAGES,
    STTConnectionError,
    STTError,
    STTStreamError,
    error_from_close,
    error_from_http,
    error_from_scribe_message,
)
from voice.stt.vad import RATE_BY_FORMAT

__all__ = ["REALTIME_PATH", "ScribeRealtimeRecognizer", "scribe_url"]

log = structlog.get_logger(__name__)

REALTIME_PATH = "/v1/speech-to-text/realtime"
MAX_MESSAGE_BYTES = 2**20
SEND_QUEUE_MAX = 200  # messages (20 s of audio at 100 ms): past this the service is stalled; drop audio
CLOSE_TIMEOUT_S = 1.0


def ws_base(base_url: str) -> str:
    """`https://host` -> `wss://host`; `http://host:port` -> `ws://host:port` (the emulator)."""
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return ("wss" if scheme == "https" else "ws") + "://" + rest


def scribe_url(base_url: str, config: STTConfig, audio_format: str) -> str:
    """The session URL: the SDK's query parameters for what we use."""
    params = [("model_id", config.model_id), ("audio_format", audio_format), ("commit_strategy", config.stt_commit)]
    if config.stt_language:
        params.append(("language_code", config.stt_language))
    if config.stt_commit == "vad":
        params.append(("vad_silence_threshold_secs", str(max(0.3, min(3.0, config.stt_end_silence_ms / 1000)))))
    return ws_base(base_url) + REALTIME_PATH + "?" + urlencode(params)


class ScribeRealtimeRecognizer(RecognizerBase):
    """A `SpeechRecognizer` over one Scribe realtime session."""

    provider = "elevenlabs"

    def __init__(self, config: STTConfig, *, api_key: str, base_url: str, audio_format: str = "pcm_8000") -> None:
        super().__init__(config, audio_format)
        self.api_key = api_key
        self.url = scribe_url(base_url, config, audio_format)
        self.sample_rate = RATE_BY_FORMAT[audio_format]
        self.session_id: str | None = None
        self._frames_per_chunk = config.stt_chunk_ms // 20
        self._pending: list[bytes] = []
        self._send_queue: asyncio.Queue[str] = asyncio.Queue(SEND_QUEUE_MAX)
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commits_sent = 0
        self._committed: deque[int] = deque()  # utterances committed, awaiting their transcript
        self._finals = 0
        self._dropped = 0
        self._last_error: STTError | None = None  # a non-fatal error message, reported if the session then ends

    # --- life cycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        attempt = 0
        while True:
            try:
                self._ws = await self._open()
                break
            except STTError as exc:
                if not exc.retryable or attempt >= self.config.stt_max_retries or self.closed:
                    raise
                attempt += 1
                delay = exc.retry_delay_s(attempt)
                log.info("stt_connect_retry", provider=self.provider, attempt=attempt, error=type(exc).__name__,
                         delay_s=round(delay, 3))
                await asyncio.sleep(delay)
        self._tasks = [asyncio.create_task(self._send_loop(), name="stt-scribe-send"),
                       asyncio.create_task(self._receive_loop(), name="stt-scribe-receive")]

    async def _open(self) -> ClientConnection:
        headers = {"xi-api-key": self.api_key} if self.api_key else {}
        try:
            ws = await connect(self.url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES,
                               open_timeout=self.config.stt_connect_timeout_s, close_timeout=CLOSE_TIMEOUT_S,
                               compression=None, user_agent_header="voice-bridge")
        except InvalidStatus as exc:
            response = exc.response
            raise error_from_http(
                response.status_code, bytes(response.body or b""), retry_after=response.headers.get("Retry-After")
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise STTConnectionError(
                f"cannot connect to ElevenLabs speech-to-text: {exc or type(exc).__name__}"
            ) from exc
        try:
            async with asyncio.timeout(self.config.stt_request_timeout_s):
                raw = await ws.recv()
            data = _parse(raw)
            kind = data.get("message_type")
            if kind != "session_started":
                if kind in FATAL_SCRIBE_ERRORS or kind in WARNING_SCRIBE_MESSAGES:
                    raise error_from_scribe_message(data)
                raise STTStreamError(f"ElevenLabs speech-to-text began with {kind!r}, not session_started")
            self.session_id = str(data.get("session_id") or "")
            log.info("stt_session_started", provider=self.provider, session_id=self.session_id,
                     model=self.config.model_id, audio_format=self.audio_format, commit=self.config.stt_commit)
            return ws
        except ConnectionClosed as exc:
            ws.transport.abort()
            raise error_from_close(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "") from exc
        except TimeoutError as exc:
            ws.transport.abort()
            raise STTConnectionError(
                f"ElevenLabs speech-to-text sent no session_started within {self.config.stt_request_timeout_s} s"
            ) from exc
        except BaseException:
            ws.transport.abort()
            raise

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await ws.close(1000, "call ended")
            ws.transport.abort()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- audio out ----------------------------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        self._pending.append(frame)
        if len(self._pending) >= self._frames_per_chunk:
            self._flush(commit=False)

    def _on_end(self, end: UtteranceEnd) -> None:
        if self.config.stt_commit == "manual" and end.reason != "blip":
            self._flush(commit=True)

    def _on_commit_idle(self) -> None:
        if self.config.stt_commit == "manual" and self._commits_sent < self.utterance:
            self._flush(commit=True)

    def _flush(self, *, commit: bool) -> None:
        if self._pending:
            self._send(b"".join(self._pending), commit=False)
            self._pending.clear()
        if commit:
            self._commits_sent = self.utterance
            self._committed.append(self.utterance)
            self._send(b"", commit=True)

    def _send(self, audio: bytes, *, commit: bool) -> None:
        message = json.dumps({"message_type": "input_audio_chunk",
                              "audio_base_64": base64.b64encode(audio).decode("ascii"),
                              "commit": commit, "sample_rate": self.sample_rate})
        try:
            self._send_queue.put_nowait(message)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 50 == 0:
                log.warning("stt_audio_dropped", provider=self.provider, messages=self._dropped,
                            reason="the speech-to-text connection is not keeping up")

    async def _send_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while True:
                await ws.send(await self._send_queue.get())
        except ConnectionClosed:
            return  # the receive loop reports why

    # --- events in ----------------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for raw in ws:
                try:
                    data = _parse(raw)
                except STTStreamError as exc:
                    self._fail(exc)
                    return
                self._on_message(data)
                if self.failed is not None:
                    return
        except ConnectionClosed:
            pass
        if not self.closed and self.failed is None:
            rcvd = ws.close_code
            if self._last_error is not None:  # the docs: an error message comes before the close
                self._fail(self._last_error)
            else:
                self._fail(error_from_close(rcvd, ws.close_reason or "") if rcvd != 1000 else
                           STTStreamError("ElevenLabs speech-to-text ended the session", close_code=1000))

    def _on_message(self, data: dict[str, Any]) -> None:
        kind = data.get("message_type")
        if kind == "partial_transcript":
            text = str(data.get("text") or "")
            if text:
                self._partial(text)
        elif kind == "committed_transcript":
            self._finals += 1
            if self._committed:
                utterance = self._committed.popleft()
            else:
                utterance = self._finals if self.config.stt_commit == "vad" else self.utterance
            self._final(utterance, str(data.get("text") or "").strip())
        elif kind in WARNING_SCRIBE_MESSAGES:
            if kind != "warning":
                self._last_error = error_from_scribe_message(data)
            log.warning("stt_service_warning", provider=self.provider, kind=kind,
                        message=str(data.get("error") or data.get("warning") or ""))
        elif kind in FATAL_SCRIBE_ERRORS:
            self._fail(error_from_scribe_message(data))
        # session_started again, timestamps, entities, language detection: nothing the call needs


def _parse(raw: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise STTStreamError(f"ElevenLabs speech-to-text sent a message that is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise STTStreamError("ElevenLabs speech-to-text sent a message that is not a JSON object")
    return data
