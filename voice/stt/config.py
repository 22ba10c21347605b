"""Speech recognition settings: which recognizer a call gets, and how the caller's turn is endpointed.

`STTConfig` is a frozen dataclass declared with the project's `setting()` mechanism, so `voice.config.load`
reads it from the environment today; the names are also listed here for whoever folds it into the
pydantic-settings tree:

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
| openai_base_url | `STT_OPENAI_BASE_URL` | `https://api.openai.com/v1` (a self-hosted Whisper server's `/v1`) |
| openai_api_key | `STT_OPENAI_API_KEY` | empty (no `Authorization` header) |
| connect_timeout_s | `STT_CONNECT_TIMEOUT` | 3.0 |
| request_timeout_s | `STT_REQUEST_TIMEOUT` | 10.0: one transcription request, or the wait for `session_started` |
| max_retries | `STT_MAX_RETRIES` | 1: retries of a connection or a 429/5xx before anything was transcribed |

The ElevenLabs recognizer takes its key and base URL from `TTSConfig` (`ELEVENLABS_API_KEY`,
`ELEVENLABS_BASE_URL`; the wss URL is derived): one account, one emulator in tests.
"""

from __future__ import annotations

import dataclasses

from voice.config import (
    parse_choice,
    parse_float_range,
    parse_int_range,
    parse_str,
    parse_url,
    setting,
)

__all__ = ["COMMIT_MODES", "DEFAULT_MODELS", "PROVIDERS", "STTConfig"]

PROVIDERS = ("none", "elevenlabs", "openai")
COMMIT_MODES = ("manual", "vad")
DEFAULT_MODELS = {"elevenlabs": "scribe_v2_realtime", "openai": "whisper-1", "none": ""}


@dataclasses.dataclass(frozen=True)
class STTConfig:
    """The recognizer and endpointing settings (see the module docstring for the table)."""

    provider: str = setting("STT_PROVIDER", "none", parse_choice(*PROVIDERS),
                            "speech recognizer: elevenlabs (Scribe realtime), openai (OpenAI-compatible), none")
    model: str = setting("STT_MODEL", "", parse_str, "recognition model; empty = the provider's default")
    language: str = setting("STT_LANGUAGE", "", parse_str, "language code of the caller (empty: detected)")
    commit: str = setting("STT_COMMIT", "manual", parse_choice(*COMMIT_MODES),
                          "who ends an utterance for Scribe: manual (our endpointing) or vad (its server VAD)")
    end_silence_ms: int = setting("STT_END_SILENCE_MS", 600, parse_int_range(100, 10000),
                                  "silence in ms that ends the caller's utterance")
    max_utterance_s: float = setting("STT_MAX_UTTERANCE_S", 15.0, parse_float_range(1, 300),
                                     "an utterance is ended at this length in seconds")
    start_ms: int = setting("STT_START_MS", 80, parse_int_range(20, 2000),
                            "voiced audio in ms that starts an utterance")
    barge_in_ms: int = setting("STT_BARGE_IN_MS", 240, parse_int_range(20, 5000),
                               "voiced audio in ms within one utterance that counts as barge-in")
    vad_aggressiveness: int = setting("STT_VAD_AGGRESSIVENESS", 2, parse_int_range(0, 3),
                                      "webrtcvad mode 0-3; higher rejects more non-speech")
    vad_min_rms: int = setting("STT_VAD_MIN_RMS", 200, parse_int_range(0, 32767),
                               "frames below this RMS are never speech (line noise)")
    chunk_ms: int = setting("STT_CHUNK_MS", 100, parse_int_range(20, 1000),
                            "audio per Scribe WebSocket message, in ms (a multiple of 20)")
    openai_base_url: str = setting("STT_OPENAI_BASE_URL", "https://api.openai.com/v1", parse_url("http", "https"),
                                   "OpenAI-compatible API base with /v1 (a self-hosted Whisper server)")
    openai_api_key: str = setting("STT_OPENAI_API_KEY", "", parse_str,
                                  "bearer token for the OpenAI-compatible endpoint", secret=True)
    connect_timeout_s: float = setting("STT_CONNECT_TIMEOUT", 3.0, parse_float_range(0.05, 60),
                                       "seconds to connect to the recognizer")
    request_timeout_s: float = setting("STT_REQUEST_TIMEOUT", 10.0, parse_float_range(0.05, 300),
                                       "seconds for one transcription request or the session start")
    max_retries: int = setting("STT_MAX_RETRIES", 1, parse_int_range(0, 10),
                               "retries of a refused connection or a 429/5xx before anything was transcribed")

    def __post_init__(self) -> None:
        if self.chunk_ms % 20:
            raise ValueError(f"STT_CHUNK_MS must be a multiple of 20 ms, got {self.chunk_ms}")
        if self.barge_in_ms < self.start_ms:
            raise ValueError(f"STT_BARGE_IN_MS ({self.barge_in_ms}) must be at least STT_START_MS ({self.start_ms})")

    @property
    def model_id(self) -> str:
        """The model asked for: `model`, or the provider's default."""
        return self.model or DEFAULT_MODELS[self.provider]
