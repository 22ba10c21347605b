"""The caller's turn as a pure state machine over voiced/unvoiced 20 ms frames: no clock, no I/O.

Time is counted in frames (the media clock delivers one every 20 ms), so the same input always gives the
same decisions and tests need no clock at all.

- Speech starts when `start_frames` of the last `start_window` frames are voiced: `SpeechStart` carries
  the frame where the voiced run began, so a recognizer can send the onset too (pre-roll).
- Barge-in is declared once per utterance when it has `barge_in_frames` voiced frames: a cough or a click
  (100-200 ms) starts an utterance but never interrupts a prompt; speech (a syllable or two) does.
- The utterance ends after `end_silence_frames` unvoiced frames in a row (`reason="silence"`), or at
  `max_frames` (`reason="max_length"`). An utterance with fewer than `min_voiced_frames` voiced frames (a
  click) ends with `reason="blip"`: nothing worth transcribing. Transcribing needs less than barge-in does: a
  short "да" (120 ms of tone-coded audio, 200 ms spoken) is an answer even though it would not interrupt.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Literal

__all__ = ["BargeIn", "EndpointEvent", "Endpointer", "EndpointerConfig", "SpeechStart", "UtteranceEnd"]

FRAME_MS = 20


@dataclasses.dataclass(frozen=True)
class EndpointerConfig:
    start_frames: int = 4
    start_window: int = 6
    barge_in_frames: int = 12
    min_voiced_frames: int = 5
    end_silence_frames: int = 30
    max_frames: int = 750

    @classmethod
    def from_ms(cls, *, start_ms: int = 80, barge_in_ms: int = 240, end_silence_ms: int = 600,
                max_utterance_s: float = 15.0, min_utterance_ms: int = 100) -> EndpointerConfig:
        start = max(1, round(start_ms / FRAME_MS))
        return cls(start_frames=start, start_window=start + max(2, start // 2),
                   barge_in_frames=max(start, round(barge_in_ms / FRAME_MS)),
                   min_voiced_frames=max(1, round(min_utterance_ms / FRAME_MS)),
                   end_silence_frames=max(1, round(end_silence_ms / FRAME_MS)),
                   max_frames=max(start + 1, round(max_utterance_s * 1000 / FRAME_MS)))

    def __post_init__(self) -> None:
        if not 1 <= self.start_frames <= self.start_window:
            raise ValueError(f"start_frames must be 1..start_window ({self.start_window}), got {self.start_frames}")
        if self.barge_in_frames < self.start_frames:
            raise ValueError("barge_in_frames must be at least start_frames")
        if self.end_silence_frames < 1 or self.max_frames <= self.start_frames:
            raise ValueError("end_silence_frames must be >= 1 and max_frames > start_frames")


@dataclasses.dataclass(frozen=True)
class SpeechStart:
    frame: int
    """The frame index at which the start was decided."""
    onset: int
    """The first voiced frame of the run that started it (pre-roll from here)."""


@dataclasses.dataclass(frozen=True)
class BargeIn:
    frame: int


@dataclasses.dataclass(frozen=True)
class UtteranceEnd:
    frame: int
    reason: Literal["silence", "max_length", "blip"]
    onset: int
    last_voiced: int
    voiced_frames: int


EndpointEvent = SpeechStart | BargeIn | UtteranceEnd


class Endpointer:
    """Feed `update(voiced)` once per frame; it returns the events that frame caused (usually none)."""

    def __init__(self, config: EndpointerConfig | None = None) -> None:
        self.config = config or EndpointerConfig()
        self.frame = -1
        self.in_speech = False
        self._recent: deque[int] = deque(maxlen=self.config.start_window)  # indexes of recent voiced frames
        self._onset = 0
        self._voiced = 0
        self._silence = 0
        self._last_voiced = 0
        self._barged = False

    def update(self, voiced: bool) -> list[EndpointEvent]:
        self.frame += 1
        k = self.frame
        c = self.config
        if not self.in_speech:
            if voiced:
                self._recent.append(k)
            while self._recent and self._recent[0] <= k - c.start_window:
                self._recent.popleft()
            if len(self._recent) < c.start_frames:
                return []
            self.in_speech = True
            self._onset = self._recent[0]
            self._voiced = len(self._recent)
            self._recent.clear()
            self._silence = 0
            self._last_voiced = k
            self._barged = False
            events: list[EndpointEvent] = [SpeechStart(k, self._onset)]
            if self._voiced >= c.barge_in_frames:
                self._barged = True
                events.append(BargeIn(k))
            return events
        events = []
        if voiced:
            self._voiced += 1
            self._silence = 0
            self._last_voiced = k
            if not self._barged and self._voiced >= c.barge_in_frames:
                self._barged = True
                events.append(BargeIn(k))
        else:
            self._silence += 1
        if self._silence >= c.end_silence_frames:
            events.append(self._end(k, "silence"))
        elif k - self._onset + 1 >= c.max_frames:
            events.append(self._end(k, "max_length"))
        return events

    def cut(self) -> UtteranceEnd | None:
        """End the current utterance now (the caller's turn was ended from outside); None when idle."""
        if not self.in_speech:
            return None
        return self._end(self.frame, "silence")

    def _end(self, k: int, reason: Literal["silence", "max_length", "blip"]) -> UtteranceEnd:
        if self._voiced < self.config.min_voiced_frames:
            reason = "blip"
        self.in_speech = False
        self._recent.clear()
        return UtteranceEnd(k, reason, self._onset, self._last_voiced, self._voiced)
