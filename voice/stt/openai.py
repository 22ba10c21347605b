"""OpenAI-compatible transcription: our endpointing cuts the utterance, one `POST {base}/audio/transcriptions`
per utterance (multipart: a WAV file, `model`, `language`, `response_format=json`) transcribes it.

For OpenAI itself and for self-hosted Whisper servers that copy its API. There are no partial transcripts;
the final one follows the end of speech by the request's time. A refused connection, a 429 or a 5xx is
retried (`max_retries`): the utterance is still in hand, so a retry can help; a 4xx never will.
"""

from __future__ import annotations

import asyncio
import audioop
import contextlib
import io
import wave
from collections import deque

import httpx
import structlog

from voice.http import shared_http_client
from voice.stt.base import RecognizerBase
from voice.stt.config import STTConfig
from voice.stt.endpointer import SpeechStart, UtteranceEnd
from voice.stt.errors import (
    STTConnectionError,
    STTError,
    STTServerError,
    STTStreamError,
    error_from_openai_http,
)
from voice.stt.vad import RATE_BY_FORMAT

__all__ = ["OpenAITranscriber", "wav_bytes"]

log = structlog.get_logger(__name__)

PAD_FRAMES = 10  # 200 ms kept before the onset and after the last voiced frame


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A mono 16-bit WAV file of `pcm`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


class OpenAITranscriber(RecognizerBase):
    """A `SpeechRecognizer` that transcribes each endpointed utterance with one HTTP request."""

    provider = "openai"

    def __init__(self, config: STTConfig, *, audio_format: str = "pcm_8000",
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, audio_format)
        self.url = config.stt_openai_base_url.rstrip("/") + "/audio/transcriptions"
        self.rate = RATE_BY_FORMAT[audio_format]
        self._client = client
        self._preroll: deque[bytes] = deque(maxlen=self.endpointer.config.start_window + PAD_FRAMES)
        self._frames: list[bytes] | None = None  # the utterance being collected
        self._first_frame = 0  # frame index of _frames[0]
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Nothing to connect: the shared HTTP client's pooled connections serve every call."""

    def _on_start(self, start: SpeechStart) -> None:
        keep = min(len(self._preroll), start.frame - start.onset + PAD_FRAMES)
        self._frames = list(self._preroll)[len(self._preroll) - keep:] if keep > 0 else []
        self._first_frame = start.frame - len(self._frames)  # this frame is appended by _on_frame

    def _on_frame(self, frame: bytes) -> None:
        if self._frames is not None:
            self._frames.append(frame)
        else:
            self._preroll.append(frame)

    def _on_end(self, end: UtteranceEnd) -> None:
        frames, self._frames = self._frames, None
        self._preroll.clear()
        if end.reason == "blip" or not frames:
            return
        # the frame that ended it is appended after the decision: frames cover _first_frame .. end.frame - 1
        last = end.last_voiced + PAD_FRAMES - self._first_frame + 1
        audio = b"".join(frames[:max(1, last)])
        if self.audio_format == "ulaw_8000":
            audio = audioop.ulaw2lin(audio, 2)
        task = asyncio.get_running_loop().create_task(self._transcribe(self.utterance, audio),
                                                      name=f"stt-openai-{self.utterance}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(self, utterance: int, pcm: bytes) -> None:
        attempt = 0
        while True:
            try:
                text = await self._request(pcm)
                self._final(utterance, text)
                return
            except STTError as exc:
                if not exc.retryable or attempt >= self.config.stt_max_retries or self.closed:
                    self._fail(exc)
                    return
                attempt += 1
                delay = exc.retry_delay_s(attempt)
                log.info("stt_request_retry", provider=self.provider, attempt=attempt, error=type(exc).__name__,
                         delay_s=round(delay, 3))
                await asyncio.sleep(delay)

    async def _request(self, pcm: bytes) -> str:
        client = self._client or shared_http_client()
        data = {"model": self.config.model_id, "response_format": "json"}
        if self.config.stt_language:
            data["language"] = self.config.stt_language
        headers = {"Authorization": f"Bearer {self.config.openai_api_key}"} if self.config.openai_api_key else {}
        timeout = httpx.Timeout(self.config.stt_request_timeout_s, connect=self.config.stt_connect_timeout_s)
        try:
            response = await client.post(self.url, data=data, headers=headers, timeout=timeout,
                                         files={"file": ("utterance.wav", wav_bytes(pcm, self.rate), "audio/wav")})
        except httpx.TimeoutException as exc:
            raise STTServerError(f"the transcription server did not answer within "
                                 f"{self.config.stt_request_timeout_s} s", code="timeout") from exc
        except httpx.HTTPError as exc:
            raise STTConnectionError(f"cannot reach the transcription server: {exc or type(exc).__name__}") from exc
        if response.status_code != 200:
            raise error_from_openai_http(response.status_code, response.content,
                                         retry_after=response.headers.get("retry-after"))
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise STTStreamError(f"the transcription server answered without a text field: {response.text[:200]!r}")
        return str(body["text"]).strip()

    async def _stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
