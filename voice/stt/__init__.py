"""Speech recognition for one call: a recognizer (Scribe realtime or OpenAI-compatible), VAD, endpointing.

`create_recognizer(stt, tts, audio_format)` builds the configured recognizer; see `base.SpeechRecognizer` for
the interface and `config.STTConfig` for the settings.
"""

from __future__ import annotations

from voice.config import TTSConfig
from voice.stt.base import RecognizerBase, SpeechRecognizer
from voice.stt.config import STTConfig
from voice.stt.endpointer import Endpointer, EndpointerConfig
from voice.stt.errors import STTError, STTNotConfigured
from voice.stt.events import (
    BargeInDetected,
    FinalTranscript,
    PartialTranscript,
    RecognizerEvent,
    SpeechStarted,
    UtteranceEnded,
)
from voice.stt.vad import VoiceActivityDetector

__all__ = [
    "BargeInDetected",
    "Endpointer",
    "EndpointerConfig",
    "FinalTranscript",
    "PartialTranscript",
    "RecognizerBase",
    "RecognizerEvent",
    "STTConfig",
    "STTError",
    "STTNotConfigured",
    "SpeechRecognizer",
    "SpeechStarted",
    "UtteranceEnded",
    "VoiceActivityDetector",
    "create_recognizer",
]


def create_recognizer(stt: STTConfig, tts: TTSConfig, audio_format: str = "pcm_8000") -> SpeechRecognizer:
    """A new, not yet started recognizer for one call. STTNotConfigured when `STT_PROVIDER=none`."""
    if stt.stt_provider == "elevenlabs":
        from voice.stt.scribe import ScribeRealtimeRecognizer

        return ScribeRealtimeRecognizer(
            stt, api_key=tts.api_key.get_secret_value(), base_url=stt.scribe_base_url(tts.base_url),
            audio_format=audio_format,
        )
    if stt.stt_provider == "openai":
        from voice.stt.openai import OpenAITranscriber

        return OpenAITranscriber(stt, audio_format=audio_format)
    raise STTNotConfigured("no speech recognizer is configured (STT_PROVIDER=none)")
