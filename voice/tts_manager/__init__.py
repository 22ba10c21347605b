"""ElevenLabs text to speech: `TTSManager` (HTTP streaming and the LLM WebSocket), its
`WebSocketConnectionManager`, the process-wide HTTP client, and typed errors."""

from voice.http import aclose_shared_client, shared_http_client
from voice.tts_manager.connection_manager import WebSocketConnectionManager
from voice.tts_manager.errors import (
    TTSAuthError,
    TTSConnectionError,
    TTSError,
    TTSFormatError,
    TTSInputTimeout,
    TTSQuotaError,
    TTSRateLimited,
    TTSServerError,
    TTSStreamError,
    TTSValidationError,
    TTSVoiceNotFoundError,
)
from voice.tts_manager.manager import FLUSH, TextInputQueue, TTSManager, iter_llm_audio

__all__ = [
    "FLUSH",
    "TTSAuthError",
    "TTSConnectionError",
    "TTSError",
    "TTSFormatError",
    "TTSInputTimeout",
    "TTSManager",
    "TTSQuotaError",
    "TTSRateLimited",
    "TTSServerError",
    "TTSStreamError",
    "TTSValidationError",
    "TTSVoiceNotFoundError",
    "TextInputQueue",
    "WebSocketConnectionManager",
    "aclose_shared_client",
    "iter_llm_audio",
    "shared_http_client",
]
