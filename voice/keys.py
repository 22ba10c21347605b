"""The one place that knows the shape of every Redis key of the project.

Nothing else formats keys, so a change of shape is made here once and every reader and writer agrees.

| kind     | shape                         | written by                    | expiry                      |
|----------|-------------------------------|-------------------------------|-----------------------------|
| static   | `static:<name>`               | `voice-bridge load-audio`     | none                        |
| tts      | `tts:<profile tag>:<text>`    | the orchestrator, after a TTS | `TTS_CACHE_TTL` (30 days)   |
| call     | `call:<uuid>`                 | an upstream system (JSON)     | the writer's choice         |
| summary  | `summary:<session>`           | the LLM conversation manager  | mandatory (`set_text`)      |
| scratch  | `preflight:<token>`           | `voice-bridge check`          | seconds (deleted after use) |

A TTS key carries a *profile tag*: a short hash of everything that changes how a text sounds (voice, model,
output format, voice settings, and the stored frame format). Changing the voice therefore misses the cache
instead of playing the old voice's audio. Texts longer than `MAX_TEXT_IN_KEY` characters are replaced by
`#<sha256>`; a hashed form is one character longer than any text kept verbatim, so the two never collide.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from voice.audio import FRAME_MS, SAMPLE_RATE, SAMPLE_WIDTH
from voice.config import TTSConfig

STATIC_PREFIX = "static:"
TTS_PREFIX = "tts:"
CALL_PREFIX = "call:"
SUMMARY_PREFIX = "summary:"
PREFLIGHT_PREFIX = "preflight:"

MAX_TEXT_IN_KEY = 64
PROFILE_TAG_LENGTH = 12
_HEX = frozenset("0123456789abcdef")


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{kind} must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{kind} must not contain control characters: {value!r}")
    return value


def static_key(name: str) -> str:
    """`static:<name>`: a pre-recorded fragment (the WAV file's stem), kept without expiry."""
    return STATIC_PREFIX + _check_name("static fragment name", name)


def profile_tag(tts: TTSConfig) -> str:
    """A short stable hash of what makes a synthesis sound the way it does.

    Voice settings are hashed as canonical JSON (sorted keys), so their order in the environment does not
    matter. The stored frame format is included so a change of it invalidates old entries too.
    Compute it once per configuration and pass the tag to `tts_key`.
    """
    material: list[Any] = [
        tts.voice_id,
        tts.model_id,
        tts.output_format,
        tts.voice_settings,
        [SAMPLE_RATE, SAMPLE_WIDTH, FRAME_MS],
    ]
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:PROFILE_TAG_LENGTH]


def tts_key(text: str, profile: TTSConfig | str) -> str:
    """`tts:<profile tag>:<text>` (e.g. `tts:3f9a0c1d2b4e:12500`); texts over 64 characters are hashed.

    `profile` is the TTS configuration, or a tag already computed from it by `profile_tag` (cheaper on a
    hot path). The text is used exactly as it will be synthesised: no normalisation, since two texts that
    differ in any character may sound different.
    """
    if not isinstance(text, str):
        raise TypeError(f"TTS text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("TTS text must not be empty")
    tag = profile_tag(profile) if isinstance(profile, TTSConfig) else _check_tag(profile)
    if len(text) > MAX_TEXT_IN_KEY:
        text = "#" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{TTS_PREFIX}{tag}:{text}"


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or len(tag) != PROFILE_TAG_LENGTH or not set(tag) <= _HEX:
        raise ValueError(f"not a profile tag from profile_tag(): {tag!r}")
    return tag


def is_tts_key(key: str) -> bool:
    """True for keys built by `tts_key` (they get the TTS cache TTL)."""
    return key.startswith(TTS_PREFIX)


def call_vars_key(call_uuid: str | uuid.UUID) -> str:
    """`call:<uuid>`: a call's variables (a JSON object) stored by an upstream system.

    The UUID is written in its canonical form (lower case, with dashes), which is how the bridge prints
    the AudioSocket UUID, so `ABCDEF...` and `abcdef...` name the same call.
    """
    if isinstance(call_uuid, uuid.UUID):
        return CALL_PREFIX + str(call_uuid)
    try:
        return CALL_PREFIX + str(uuid.UUID(call_uuid))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"not a call UUID: {call_uuid!r}") from None


def summary_key(session_id: str) -> str:
    """`summary:<session>`: an LLM conversation summary (always stored with a TTL)."""
    return SUMMARY_PREFIX + _check_name("session id", session_id)


def preflight_key(token: str) -> str:
    """`preflight:<token>`: the scratch key a preflight check writes, reads back and deletes."""
    return PREFLIGHT_PREFIX + _check_name("preflight token", token)
