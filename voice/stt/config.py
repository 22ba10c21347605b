"""Speech recognition settings: which recognizer a call gets, and how the caller's turn is endpointed.

`STTConfig` is one part of the bridge's `Settings` (`settings.stt`). Its fields carry `stt_` because `serve`
flags and overrides are keyed by field name across every settings part:

| field | environment | default |
| --- | --- | --- |
| provider | `STT_PROVIDER` | `none` (`elevenlabs`, `openai`) |
| model | `STT_MODEL` | empty = the provider's default (`scribe_v2_realtime`, `whisper-1`) |
| language | `STT_LANGUAGE` | empty = the service detects it (ISO-639-1/3, e.g. `ru`) |
| commit | `STT_COMMIT` | `manual` (our endpointing commits) or `vad` (Scribe's server VAD commits) |
| end_silence_ms | `STT_END_SILENCE_MS` | 600: silence that ends an utterance |
| max_utterance_s | `STT_MAX_UTTERANCE_S` | 15: an utterance is cut (committed) at this length |
| start_ms | `STT_START_MS` | 80: voiced audio that starts an utterance |
| barge_in_ms | `STT_BARGE_IN_MS` | 240: voiced audio in one utterance before it counts as barge-in |
| vad_aggressiveness | `STT_VAD_AGGRESSIVENESS` | 2: webrtcvad mode 0-3 (3 rejects the most non-speech) |
| vad_min_rms | `STT_VAD_MIN_RMS` | 200: frames quieter than this are never speech (line hiss) |
| chunk_ms | `STT_CHUNK_MS` | 100: audio per Scribe WebSocket message (a commit sends what is pending at once) |
| base_url | `STT_BASE_URL` | empty = `ELEVENLABS_BASE_URL`: where Scribe realtime is (a separate STT emulator) |
| openai_base_url | `STT_OPENAI_BASE_URL` | `https://api.openai.com/v1` (a self-hosted Whisper server's `/v1`) |
| openai_api_key | `STT_OPENAI_API_KEY` | empty (no `Authorization` header) |
| connect_timeout_s | `STT_CONNECT_TIMEOUT` | 3.0 |
| request_timeout_s | `STT_REQUEST_TIMEOUT` | 10.0: one transcription request, or the wait for `session_started` |
| max_retries | `STT_MAX_RETRIES` | 1: retries of a connection or a 429/5xx before anything was transcribed |

The ElevenLabs recognizer takes its key from `TTSConfig` (`ELEVENLABS_API_KEY`: one account) and its base
URL from `STT_BASE_URL`, or `ELEVENLABS_BASE_URL` when that is empty (the wss URL is derived): one setting
in production, and the benchmarks can run the STT emulator in a process of its own so that its CPU does not
delay the TTS emulator's answers (`scribe_base_url`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import SecretStr, model_validator

from voice.config import SettingsPart, between, one_of, setting, url

__all__ = ["COMMIT_MODES", "DEFAULT_MODELS", "PROVIDERS", "STTConfig"]

PROVIDERS = ("none", "elevenlabs", "openai")
COMMIT_MODES = ("manual", "vad")
DEFAULT_MODELS = {"elevenlabs": "scribe_v2_realtime", "openai": "whisper-1", "none": ""}


class STTConfig(SettingsPart):
    """The recognizer and endpointing settings (see the module docstring for the table)."""

    stt_provider: Annotated[str, one_of(*PROVIDERS)] = setting(
        "STT_PROVIDER", "none", "speech recognizer: elevenlabs (Scribe realtime), openai (OpenAI-compatible), none")
    stt_model: str = setting("STT_MODEL", "", "recognition model; empty = the provider's default")
    stt_language: str = setting("STT_LANGUAGE", "", "language code of the caller (empty: detected)")
    stt_commit: Annotated[str, one_of(*COMMIT_MODES)] = setting(
        "STT_COMMIT", "manual", "who ends an utterance for Scribe: manual (our endpointing) or vad (its server VAD)")
    stt_end_silence_ms: Annotated[int, between(100, 10000)] = setting(
        "STT_END_SILENCE_MS", 600, "silence in ms that ends the caller's utterance")
    stt_max_utterance_s: Annotated[float, between(1, 300)] = setting(
        "STT_MAX_UTTERANCE_S", 15.0, "an utterance is ended at this length in seconds")
    stt_start_ms: Annotated[int, between(20, 2000)] = setting(
        "STT_START_MS", 80, "voiced audio in ms that starts an utterance")
    stt_barge_in_ms: Annotated[int, between(20, 5000)] = setting(
        "STT_BARGE_IN_MS", 240, "voiced audio in ms within one utterance that counts as barge-in")
    stt_vad_aggressiveness: Annotated[int, between(0, 3)] = setting(
        "STT_VAD_AGGRESSIVENESS", 2, "webrtcvad mode 0-3; higher rejects more non-speech")
    stt_vad_min_rms: Annotated[int, between(0, 32767)] = setting(
        "STT_VAD_MIN_RMS", 200, "frames below this RMS are never speech (line noise)")
    stt_chunk_ms: Annotated[int, between(20, 1000)] = setting(
        "STT_CHUNK_MS", 100, "audio per Scribe WebSocket message, in ms (a multiple of 20)")
    stt_base_url: Annotated[str, url("http", "https", optional=True)] = setting(
        "STT_BASE_URL", "", "ElevenLabs speech-to-text API base; empty = ELEVENLABS_BASE_URL")
    stt_openai_base_url: Annotated[str, url("http", "https")] = setting(
        "STT_OPENAI_BASE_URL", "https://api.openai.com/v1",
        "OpenAI-compatible API base with /v1 (a self-hosted Whisper server)")
    stt_openai_api_key: SecretStr = setting("STT_OPENAI_API_KEY", SecretStr(""),
                                            "bearer token for the OpenAI-compatible endpoint")
    stt_connect_timeout_s: Annotated[float, between(0.05, 60)] = setting(
        "STT_CONNECT_TIMEOUT", 3.0, "seconds to connect to the recognizer")
    stt_request_timeout_s: Annotated[float, between(0.05, 300)] = setting(
        "STT_REQUEST_TIMEOUT", 10.0, "seconds for one transcription request or the session start")
    stt_max_retries: Annotated[int, between(0, 10)] = setting(
        "STT_MAX_RETRIES", 1, "retries of a refused connection or a 429/5xx before anything was transcribed")

    @model_validator(mode="after")
    def _consistent(self) -> STTConfig:
        if self.stt_chunk_ms % 20:
            raise ValueError(f"STT_CHUNK_MS must be a multiple of 20 ms, got {self.stt_chunk_ms}")
        if self.stt_barge_in_ms < self.stt_start_ms:
            raise ValueError(f"STT_BARGE_IN_MS ({self.stt_barge_in_ms}) must be at least "
                             f"STT_START_MS ({self.stt_start_ms})")
        return self

    @property
    def enabled(self) -> bool:
        return self.stt_provider != "none"

    @property
    def model_id(self) -> str:
        """The model asked for: `stt_model`, or the provider's default."""
        return self.stt_model or DEFAULT_MODELS[self.stt_provider]

    def scribe_base_url(self, tts_base_url: str) -> str:
        """Where the Scribe realtime session connects: `STT_BASE_URL`, else the TTS base URL."""
        return self.stt_base_url or tts_base_url

    @property
    def openai_api_key(self) -> str:
        """The OpenAI-compatible bearer token as plain text (the one place that reads it)."""
        return self.stt_openai_api_key.get_secret_value()
