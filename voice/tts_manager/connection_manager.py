"""`WebSocketConnectionManager`: keeps one hot `stream-input` WebSocket ready for a call's next LLM turn.

ElevenLabs' `stream-input` socket carries exactly one generation: after the end-of-input message
(`{"text": ""}`) the server sends the rest of the audio and closes. So "keeping a connection hot" means
always having the *next* socket open: connected, first message sent, kept alive with `{"text": " "}` before
the server's inactivity timeout. When a turn sends its end of input its socket is marked spent (no more
keep-alive, never handed out again); when the turn's audio has all arrived (or the turn was stopped) a
replacement is opened in the background, while the audio is still playing, so the next turn also skips the
TCP + TLS + WebSocket handshake (100-300 ms). Waiting for the end of the audio keeps the handshake's CPU
work off the path of the turn's first audio.

Not a singleton: one manager per call (the specification's lifecycle), owned by that call's `TTSManager`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from voice.config import TTSConfig
from voice.tasks import cancel_and_wait
from voice.tts_manager.errors import (
    TTSAuthError,
    TTSConnectionError,
    TTSError,
    TTSFormatError,
    TTSQuotaError,
    TTSVoiceNotFoundError,
    error_from_close,
    error_from_http,
    error_from_ws_frame,
)

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 16 * 2**20  # a long generation's audio arrives in messages far over websockets' 1 MiB default
CLOSE_TIMEOUT_S = 2.0
KEEP_ALIVE_MESSAGE = json.dumps({"text": " "})
END_OF_INPUT_MESSAGE = json.dumps({"text": ""})


class WebSocketConnectionManager:
    """The life cycle of a call's `stream-input` WebSockets: connect, keep alive, hand out, replace, close.

    Attributes (as in the specification): `websocket` is the current hot connection (None when there is
    none), `keep_alive_task` its keep-alive task.
    """

    def __init__(self, config: TTSConfig) -> None:
        self.config = config
        self.websocket: ClientConnection | None = None
        self.keep_alive_task: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._epoch = 0  # bumped by close(), so a connect that was under way does not outlive it

    # --- public API -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The `stream-input` URL: the configured model and output format, `auto_mode=true`."""
        query = urlencode(
            {"model_id": self.config.model_id, "output_format": self.config.output_format, "auto_mode": "true"}
        )
        voice = quote(self.config.voice_id, safe="")
        return f"{self.config.ws_base_url}/v1/text-to-speech/{voice}/stream-input?{query}"

    def first_message(self) -> dict[str, Any]:
        """The message that opens a generation: a single space, the voice settings and the key."""
        message: dict[str, Any] = {"text": " "}
        if self.config.voice_settings:
            message["voice_settings"] = dict(self.config.voice_settings)
        if self.config.api_key.get_secret_value():
            message["xi_api_key"] = self.config.api_key.get_secret_value()
        return message

    async def connect(self) -> ClientConnection:
        """A live connection with its first message sent and keep-alive running.

        Returns the current hot connection when there is one, else opens a new one. Raises
        `TTSConnectionError` when none can be had (refused, handshake rejected, timeout), or
        `TTSAuthError` (quota, voice, format errors likewise) when the server closes it at once because
        of the credentials or settings: retrying those cannot help.
        """
        async with self._lock:
            if _is_open(self.websocket):
                assert self.websocket is not None
                return self.websocket
            self._drop_current()
            self._closed = False
            epoch = self._epoch
            websocket = await self._open()
            if epoch != self._epoch:  # close() ran while this was connecting: leave nothing behind
                await websocket.close()
                raise TTSConnectionError("the connection manager was closed while connecting")
            self.websocket = websocket
            self.keep_alive_task = asyncio.create_task(
                self._keep_alive_task(websocket), name="tts keep-alive"
            )
            return websocket

    async def get_connection(self) -> ClientConnection:
        """The hot connection for a new turn, connecting (or finishing a background connect) when needed."""
        prefetch = self._prefetch
        if prefetch is not None and not prefetch.done():
            await asyncio.wait([prefetch])  # its outcome does not matter: connect() below retries if it failed
        return await self.connect()

    def mark_spent(self, websocket: ClientConnection) -> None:
        """`websocket` carries (or is about to carry) its end of input: stop keeping it alive and stop
        handing it out. Nothing may be sent on it after the end of input, keep-alive included. Idempotent."""
        if websocket is self.websocket:
            self._drop_current()

    def prefetch(self) -> None:
        """Open the next connection in the background, unless one is hot or connecting, or the manager is
        closed. Called when a turn's socket is finished, so the next turn skips the handshake."""
        if self._closed or _is_open(self.websocket):
            return
        if self._prefetch is None or self._prefetch.done():
            self._prefetch = asyncio.create_task(self._prefetch_next(), name="tts prefetch connection")

    async def discard(self, websocket: ClientConnection) -> None:
        """Drop `websocket`: mark it spent and close it (at once, without asking for the rest of its audio,
        when it is still generating: barge-in, error). Idempotent."""
        self.mark_spent(websocket)
        if websocket.state is not State.CLOSED:
            with contextlib.suppress(Exception):
                await websocket.close()

    async def close(self) -> None:
        """End of the call: cancel keep-alive and any background connect, send `{"text": ""}` on a hot
        socket that is still open (flushing ElevenLabs' buffer), and close it."""
        self._closed = True
        self._epoch += 1
        prefetch, self._prefetch = self._prefetch, None
        await cancel_and_wait(prefetch)
        websocket = self.websocket
        self._drop_current()
        if websocket is None:
            return
        if _is_open(websocket):
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(END_OF_INPUT_MESSAGE)
        with contextlib.suppress(Exception):
            await websocket.close()

    # --- private ----------------------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        key = self.config.api_key.get_secret_value()
        headers = {"xi-api-key": key} if key else {}
        try:
            websocket = await connect(
                self.url,
                additional_headers=headers,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=self.config.connect_timeout_s,
                close_timeout=CLOSE_TIMEOUT_S,
                compression=None,  # audio is base64: deflate costs CPU on every message for little gain
                user_agent_header="voice-bridge",
            )
        except InvalidStatus as exc:
            # classified like an HTTP answer: a refused key (401) is an auth error, never retried
            raise error_from_http(exc.response.status_code, bytes(exc.response.body or b"")) from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise TTSConnectionError(f"cannot connect to ElevenLabs WebSocket: {exc or type(exc).__name__}") from exc
        try:
            await websocket.send(json.dumps(self.first_message()))
        except ConnectionClosed as exc:
            raise await _refusal(websocket, exc) from exc
        except BaseException:
            websocket.transport.abort()  # cancelled mid-setup: leave no socket behind
            raise
        log.debug("tts_ws_connected", voice=self.config.voice_id, model=self.config.model_id)
        return websocket

    async def _prefetch_next(self) -> None:
        try:
            await self.connect()
        except TTSConnectionError as exc:
            log.warning("tts_ws_prefetch_failed", error=str(exc))

    def _drop_current(self) -> None:
        """Forget the current socket and stop its keep-alive (the socket itself is not closed here)."""
        task, self.keep_alive_task = self.keep_alive_task, None
        if task is not None:
            task.cancel()
        self.websocket = None

    async def _keep_alive_task(self, websocket: ClientConnection | None = None) -> None:
        """Send `{"text": " "}` every `keepalive_s` so the server's inactivity timeout never fires; ends
        quietly when the socket dies."""
        websocket = websocket or self.websocket
        if websocket is None:
            return
        try:
            while True:
                await asyncio.sleep(self.config.keepalive_s)
                await websocket.send(KEEP_ALIVE_MESSAGE)
        except ConnectionClosed as exc:
            log.debug("tts_ws_keepalive_ended", code=exc.rcvd.code if exc.rcvd else None)


async def _refusal(websocket: ClientConnection, closed: ConnectionClosed) -> TTSError:
    """Why the server closed a socket right after the handshake (a bad key: 1008, with or without an
    error frame). Credentials and quota problems keep their type, so nobody retries them; anything
    else is a `TTSConnectionError`."""
    error: TTSError | None = None
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(0.5):
            while error is None:  # messages the server sent before closing are still readable
                message = await websocket.recv()
                with contextlib.suppress(ValueError, TypeError):
                    data = json.loads(message)
                    if isinstance(data, dict) and data.get("error"):
                        error = error_from_ws_frame(data)
    if error is None:
        error = error_from_close(closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else "")
    if isinstance(error, (TTSAuthError, TTSQuotaError, TTSVoiceNotFoundError, TTSFormatError)):
        return error
    return TTSConnectionError(f"the WebSocket closed before its first message: {error}",
                              close_code=error.close_code, code=error.code)


def _is_open(websocket: ClientConnection | None) -> bool:
    return websocket is not None and websocket.state is State.OPEN
