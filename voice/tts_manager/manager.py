"""`TTSManager`: a call's voice. HTTP streaming for known text, the WebSocket for text that streams in.

One manager per call (the specification's lifecycle), created with that call's
`WebSocketConnectionManager`. HTTP requests go through the process's shared `httpx.AsyncClient`.

Audio leaves this class as the provider sent it (`TTSConfig.output_format`: `pcm_*` s16le at its rate, or
G.711 bytes), except that PCM chunks are always whole samples: a sample split between two provider chunks
is carried to the next chunk, and a dangling half sample at the very end is dropped. Converting to 8 kHz
frames is the caller's job (`voice.audio.FrameStream`), or use `stream_static_frames`.

LLM stream queue protocol (`start_llm_stream`):
- `text_input_queue` (a `TextInputQueue`): put `str` pieces of text, each ideally a whole phrase ending in a
  space (the socket runs with `auto_mode=true`: every piece is generated as it arrives). Empty strings are
  skipped (an empty text would end the stream). `FLUSH` asks the server to generate what it buffered. `None`
  ends the input: `{"text": ""}` is sent and the server finishes the audio. Anything else raises `TypeError`
  at `put`. Items after `None` are ignored.
- `audio_output_queue`: `bytes` chunks of provider audio, then exactly one terminal item: `None` when the
  audio ended normally (`isFinal`, or a normal close), or a `TTSError` instance when it failed
  (`isinstance(item, TTSError)`; error frames and close codes are mapped by `errors.py`). After
  `stop_llm_stream()` the terminal item is `None` if none had been put yet. `iter_llm_audio()` wraps this.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from voice.audio import AudioFormatError, FrameStream, Loudness, SampleAligner, sample_width
from voice.config import TTSConfig
from voice.http import shared_http_client
from voice.tasks import cancel_and_wait
from voice.tts_manager.connection_manager import END_OF_INPUT_MESSAGE, WebSocketConnectionManager
from voice.tts_manager.errors import (
    TTSAuthError,
    TTSConnectionError,
    TTSError,
    TTSFormatError,
    TTSServerError,
    TTSStreamError,
    TTSValidationError,
    error_from_close,
    error_from_http,
    error_from_ws_frame,
)

log = structlog.get_logger(__name__)

OPTIMIZE_STREAMING_LATENCY = 4
MAX_BACKOFF_S = 5.0


class _Flush:
    def __repr__(self) -> str:
        return "FLUSH"


FLUSH: Any = _Flush()
"""Put on a `text_input_queue` to make the server generate everything it buffered now."""


class TextInputQueue(asyncio.Queue):  # type: ignore[type-arg]
    """`asyncio.Queue` of text pieces that rejects anything but `str`, `FLUSH` and `None` where it is put."""

    def put_nowait(self, item: Any) -> None:
        if not (item is None or item is FLUSH or isinstance(item, str)):
            raise TypeError(f"text_input_queue takes str, FLUSH or None, not {type(item).__name__}")
        super().put_nowait(item)

    async def put(self, item: Any) -> None:
        if not (item is None or item is FLUSH or isinstance(item, str)):
            raise TypeError(f"text_input_queue takes str, FLUSH or None, not {type(item).__name__}")
        await super().put(item)


@dataclass
class _Turn:
    """One LLM stream: its socket, queues, tasks, and whether the consumer got its terminal item."""

    websocket: ClientConnection
    text_queue: TextInputQueue
    audio_queue: asyncio.Queue  # type: ignore[type-arg]
    input_ended: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    send_task: asyncio.Task[None] | None = None
    receive_task: asyncio.Task[None] | None = None

    def finish(self, item: TTSError | None) -> None:
        """Put the one terminal item (None or an error) unless one was put already."""
        if not self.finished:
            self.finished = True
            self.audio_queue.put_nowait(item)


class TTSManager:
    """The facade the orchestrator uses: `stream_static_text` (HTTP) and `start_llm_stream` (WebSocket)."""

    def __init__(self, config: TTSConfig, connection_manager: WebSocketConnectionManager) -> None:
        self.config = config
        self.connection_manager = connection_manager
        self._turn: _Turn | None = None
        self._closing = False

    # --- HTTP streaming ---------------------------------------------------------------------------------

    @property
    def stream_url(self) -> str:
        return f"{self.config.base_url}/v1/text-to-speech/{quote(self.config.voice_id, safe='')}/stream"

    async def stream_static_text(self, text: str) -> AsyncIterator[bytes]:
        """Provider audio chunks for `text` as they arrive (HTTP streaming, `optimize_streaming_latency=4`).

        Rate limiting (429), server errors (5xx) and connection failures are retried with jittered backoff
        up to `max_retries` times, but only before any audio was yielded: after that a failure raises
        `TTSStreamError`, because the caller has already played part of the phrase. Auth, quota, voice,
        format and validation errors raise at once. Closing the generator (`aclose()`, or leaving an
        `async for`) ends the request.
        """
        if not isinstance(text, str) or not text.strip():
            raise TTSValidationError(f"text to synthesize must be a non-empty string, got {text!r}")
        self._check_settings()
        attempt = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._stream_once(text)) as chunks:
                    async for chunk in chunks:
                        yielded = True
                        yield chunk
                return
            except TTSError as exc:
                error = exc
            except httpx.TransportError as exc:  # connect/read timeouts, refused, truncated body
                if yielded:
                    raise TTSStreamError(f"the audio stream broke off: {_describe(exc)}") from exc
                error = TTSConnectionError(f"no audio from ElevenLabs: {_describe(exc)}")
                error.__cause__ = exc
            if yielded or not error.retryable or attempt >= self.config.max_retries:
                raise error
            attempt += 1
            delay = self._backoff(attempt, error)
            log.warning("tts_http_retry", attempt=attempt, delay_s=round(delay, 3), error=str(error))
            await asyncio.sleep(delay)

    async def stream_static_frames(self, text: str, *, loudness: Loudness | None = None) -> AsyncIterator[bytes]:
        """`stream_static_text` converted on the fly to 20 ms 8 kHz s16le frames (the last one padded),
        brought to `loudness` when given (the level recorded fragments are stored at)."""
        frames = FrameStream(self.config.output_format, loudness=loudness)
        async for chunk in self.stream_static_text(text):
            for frame in frames.feed(chunk):
                yield frame
        for frame in frames.flush():
            yield frame

    async def _stream_once(self, text: str) -> AsyncGenerator[bytes, None]:
        config = self.config
        body: dict[str, Any] = {"text": text, "model_id": config.model_id}
        if config.voice_settings:
            body["voice_settings"] = dict(config.voice_settings)
        timeout = httpx.Timeout(
            connect=config.connect_timeout_s, read=config.read_timeout_s, write=config.read_timeout_s,
            pool=config.connect_timeout_s,
        )
        aligner = SampleAligner(config.output_format)
        started = time.monotonic()
        async with shared_http_client().stream(
            "POST",
            self.stream_url,
            params={"output_format": config.output_format, "optimize_streaming_latency": OPTIMIZE_STREAMING_LATENCY},
            json=body,
            headers={"xi-api-key": config.api_key.get_secret_value()},
            timeout=timeout,
        ) as response:
            request_id = response.headers.get("request-id")
            if response.status_code != 200:
                raise error_from_http(
                    response.status_code,
                    await response.aread(),
                    request_id=request_id,
                    retry_after=response.headers.get("retry-after"),
                )
            first = True
            async for chunk in response.aiter_bytes():
                data = aligner.feed(chunk)
                if not data:
                    continue
                if first:
                    first = False
                    log.debug("tts_http_first_audio", request_id=request_id,
                              ms=round((time.monotonic() - started) * 1000, 1))
                yield data

    def _check_settings(self) -> None:
        """Settings that cannot work (no key, a format this side cannot convert) fail before any request."""
        if not self.config.api_key.get_secret_value():
            raise TTSAuthError("ELEVENLABS_API_KEY is not set", code="missing_api_key")
        try:
            sample_width(self.config.output_format)
        except AudioFormatError as exc:
            raise TTSFormatError(str(exc), code="unsupported_output_format") from exc

    def _backoff(self, attempt: int, error: TTSError) -> float:
        """Full-jitter exponential backoff; a server's Retry-After raises the floor (bounded)."""
        ceiling = min(MAX_BACKOFF_S, self.config.retry_backoff_s * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if error.retry_after_s is not None:
            delay = max(delay, min(error.retry_after_s, MAX_BACKOFF_S))
        return delay

    # --- WebSocket streaming ----------------------------------------------------------------------------

    async def start_llm_stream(self) -> tuple[TextInputQueue, asyncio.Queue]:  # type: ignore[type-arg]
        """Start a turn on the hot WebSocket; returns `(text_input_queue, audio_output_queue)`.

        See the module docstring for the queue protocol. One turn at a time: a turn still running is stopped
        first (its audio queue gets its terminal `None`). Raises `TTSConnectionError` when no connection can
        be had (the caller is expected to retry), `TTSAuthError` / `TTSQuotaError` / `TTSVoiceNotFoundError`
        / `TTSFormatError` when the server refused the settings at once (retrying cannot help). Errors after
        that arrive on the audio queue.
        """
        await self.stop_llm_stream()
        self._check_settings()
        websocket = await self.connection_manager.get_connection()
        text_input_queue = TextInputQueue()
        audio_output_queue: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
        turn = _Turn(websocket, text_input_queue, audio_output_queue)
        turn.send_task = asyncio.create_task(
            self._ws_send_task(websocket, text_input_queue, turn=turn), name="tts ws send"
        )
        turn.receive_task = asyncio.create_task(
            self._ws_receive_task(websocket, audio_output_queue, turn=turn), name="tts ws receive"
        )
        send_task = turn.send_task
        turn.receive_task.add_done_callback(lambda _: send_task.cancel())  # no audio to come: stop sending
        self._turn = turn
        return text_input_queue, audio_output_queue

    async def stop_llm_stream(self) -> None:
        """Stop the current turn now (barge-in, hang-up): cancel both tasks and drop its socket.

        The audio queue gets `None` if it had no terminal item yet. The next turn gets a fresh connection
        (the connection manager opens it in the background). Safe to call when no turn is running.
        """
        turn, self._turn = self._turn, None
        if turn is None:
            return
        turn.finish(None)
        await cancel_and_wait(turn.send_task, turn.receive_task)
        await self.connection_manager.discard(turn.websocket)
        if not self._closing:
            self.connection_manager.prefetch()

    async def aclose(self) -> None:
        """End of the call: stop any turn and close the call's WebSockets (the HTTP client is shared)."""
        self._closing = True
        await self.stop_llm_stream()
        await self.connection_manager.close()

    async def _ws_send_task(self, websocket: ClientConnection, text_input_queue: TextInputQueue,
                            *, turn: _Turn | None = None) -> None:
        """Forward text pieces to the socket until `None`, then send the end of input."""
        try:
            while True:
                item = await text_input_queue.get()
                if item is None:
                    # Stop keep-alive before the end of input: nothing may be sent after it.
                    self.connection_manager.mark_spent(websocket)
                    await websocket.send(END_OF_INPUT_MESSAGE)
                    if turn is not None:
                        turn.input_ended.set()
                    return
                if item is FLUSH:
                    await websocket.send(json.dumps({"text": " ", "flush": True}))
                elif item:
                    await websocket.send(json.dumps({"text": item}))
        except ConnectionClosed:
            return  # the receive task reports why the socket closed

    async def _ws_receive_task(self, websocket: ClientConnection, audio_output_queue: asyncio.Queue,  # type: ignore[type-arg]
                               *, turn: _Turn | None = None) -> None:
        """Decode server messages into audio chunks until `isFinal`, an error frame, or the socket closes."""
        turn = turn or _Turn(websocket, TextInputQueue(), audio_output_queue)
        aligner = SampleAligner(self.config.output_format)
        terminal: TTSError | None = None
        try:
            terminal = await self._receive_loop(websocket, audio_output_queue, turn, aligner)
        finally:  # also on cancellation: the consumer always gets a terminal item, the socket is dropped
            if terminal is not None:
                log.warning("tts_ws_failed", error=str(terminal), error_type=type(terminal).__name__)
            turn.finish(terminal)
            await self.connection_manager.discard(websocket)
            if not self._closing:
                self.connection_manager.prefetch()  # the next turn finds a hot connection

    async def _receive_loop(self, websocket: ClientConnection, audio_output_queue: asyncio.Queue,  # type: ignore[type-arg]
                            turn: _Turn, aligner: SampleAligner) -> TTSError | None:
        """Messages until the turn is over. While text may still come, the server may stay silent as long as
        it likes; once the input has ended, each message must come within `read_timeout_s`."""
        input_ended = asyncio.ensure_future(turn.input_ended.wait())
        try:
            while True:
                if input_ended.done():
                    try:
                        async with asyncio.timeout(self.config.read_timeout_s):
                            message = await websocket.recv()
                    except TimeoutError:
                        return TTSServerError(
                            f"no audio from ElevenLabs for {self.config.read_timeout_s} s after the end of input"
                        )
                else:
                    received = await _recv_unless(websocket, input_ended)
                    if received is None:
                        continue  # the input ended first: from now on the server has a deadline
                    message = received
                done, error = self._handle_message(message, aligner, audio_output_queue)
                if done:
                    return error
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            return error_from_close(
                exc.rcvd.code if exc.rcvd else None,
                exc.rcvd.reason if exc.rcvd else "",
                sent_code=exc.sent.code if exc.sent else None,
            )
        finally:
            await cancel_and_wait(input_ended)

    def _handle_message(self, message: str | bytes, aligner: SampleAligner,
                        audio_output_queue: asyncio.Queue) -> tuple[bool, TTSError | None]:  # type: ignore[type-arg]
        """Queue a message's audio; (turn over?, the error if it failed)."""
        if isinstance(message, bytes):
            return True, TTSStreamError("ElevenLabs sent a binary WebSocket frame; expected JSON text")
        try:
            data = json.loads(message)
        except json.JSONDecodeError:
            return True, TTSStreamError(f"ElevenLabs sent a message that is not JSON: {message[:80]!r}")
        if not isinstance(data, dict):
            return True, TTSStreamError(f"ElevenLabs sent a JSON {type(data).__name__}, expected an object")
        if data.get("error") or ("message" in data and "code" in data and "audio" not in data):
            return True, error_from_ws_frame(data)
        audio = data.get("audio")
        if audio:
            if not isinstance(audio, str):
                return True, TTSStreamError(f"`audio` must be a base64 string, got {type(audio).__name__}")
            try:
                chunk = aligner.feed(base64.b64decode(audio, validate=True))
            except (binascii.Error, ValueError):
                return True, TTSStreamError("ElevenLabs sent `audio` that is not valid base64")
            if chunk:
                audio_output_queue.put_nowait(chunk)
        if data.get("isFinal"):
            return True, None
        return False, None


async def _recv_unless(websocket: ClientConnection, stop: asyncio.Future[Any]) -> str | bytes | None:
    """The next message, or None if `stop` completes first (the pending `recv` is cancelled: websockets
    guarantees that loses no message). A closed socket raises `ConnectionClosed` as `recv` does."""
    receiving = asyncio.ensure_future(websocket.recv())
    try:
        await asyncio.wait({receiving, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not receiving.done():
            await cancel_and_wait(receiving)
    if receiving.cancelled():
        return None
    return receiving.result()


async def iter_llm_audio(audio_output_queue: asyncio.Queue) -> AsyncIterator[bytes]:  # type: ignore[type-arg]
    """Audio chunks from an `audio_output_queue` until its end; raises the `TTSError` if the turn failed."""
    while True:
        item = await audio_output_queue.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
