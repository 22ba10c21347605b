"""Helpers for the LLM tests: settings for the fake endpoint, what the caller heard, which requests it got."""

from __future__ import annotations

from typing import Any

from voice.config import LLMConfig
from voice.emulators.elevenlabs import identify
from voice.emulators.llm import LLMEmulator

LLM_KEY = "llm-test-key"


def llm_config(fake: LLMEmulator, **overrides: Any) -> LLMConfig:
    """Settings for `fake` (the `fake_llm` fixture) with a short read timeout, and `overrides`."""
    values = {"llm_base_url": fake.url, "llm_api_key": LLM_KEY, "llm_model": "test-model", "llm_read_timeout_s": 5.0}
    return LLMConfig(**{**values, **overrides})


def heard(audio: bytes) -> str:
    """What the caller heard of the TTS emulator's speech, without spaces.

    Over the WebSocket each phrase is generated on its own (the emulator strips it), so the spaces between
    phrases are not spoken while those inside a phrase are: comparing without spaces checks every word,
    in order, whatever the phrase boundaries were.
    """
    return "".join(identify(audio)).replace(" ", "")


def bare(text: str) -> str:
    return text.replace(" ", "")


def use_tts_format(stack, output_format: str) -> None:
    """pcm_8000 keeps every frame boundary on a character boundary (no resampler), so audio cut
    mid-answer and spoken again still reads back exactly."""
    tts = stack.settings.tts.model_copy(update={"output_format": output_format})
    stack.settings = stack.settings.model_copy(update={"tts": tts})


def summary_requests(fake) -> list[dict]:
    from voice.llm import SUMMARY_INSTRUCTION

    return [entry for entry in fake.stats.log if entry["prompt"].startswith(SUMMARY_INSTRUCTION)]


def answer_requests(fake) -> list[dict]:
    from voice.llm import SUMMARY_INSTRUCTION

    return [entry for entry in fake.stats.log if not entry["prompt"].startswith(SUMMARY_INSTRUCTION)]
