"""What a recognizer tells its call: local endpointing decisions and the service's transcripts.

`utterance` numbers the caller's utterances of one call from 1 (as our endpointer counts them; with
Scribe's server VAD a final transcript carries the number of the utterance it closed, counted in finals).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = [
    "BargeInDetected",
    "FinalTranscript",
    "PartialTranscript",
    "RecognizerEvent",
    "SpeechStarted",
    "UtteranceEnded",
]


@dataclasses.dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking (our VAD): `frame` is the 20 ms frame index of the call's inbound audio."""

    utterance: int
    frame: int


@dataclasses.dataclass(frozen=True)
class BargeInDetected:
    """The utterance is speech long enough to interrupt a prompt (not a cough, not line noise)."""

    utterance: int
    frame: int


@dataclasses.dataclass(frozen=True)
class UtteranceEnded:
    """Our endpointer ended the utterance (`blip`: too short to be speech; it is not transcribed)."""

    utterance: int
    frame: int
    reason: Literal["silence", "max_length", "blip", "commit"]


@dataclasses.dataclass(frozen=True)
class PartialTranscript:
    """Text so far of the current utterance; later partials replace it."""

    utterance: int
    text: str


@dataclasses.dataclass(frozen=True)
class FinalTranscript:
    """The utterance's final text (may be empty when nothing was understood)."""

    utterance: int
    text: str


RecognizerEvent = SpeechStarted | BargeInDetected | UtteranceEnded | PartialTranscript | FinalTranscript
