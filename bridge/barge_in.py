"""Barge-in detection: does the caller speak over the prompt? (Issue 16 adds a VAD-based detector beside it.)

A detector is fed every inbound frame (the call's `on_audio` callback, 50 times a second per call), and
sets `detected` when the caller has been speaking long enough. `bridge.playlist` arms it for a node with
`barge_in = true` and stops the prompt when it fires.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from voice.audio import rms

__all__ = ["BargeInDetector", "SpeechDetector"]


class BargeInDetector(Protocol):
    """What the playlist needs from a detector: arm/disarm around a prompt, and the event it sets."""

    detected: asyncio.Event

    def arm(self) -> None: ...

    def disarm(self) -> None: ...

    def feed(self, payload: bytes, rate: int) -> None: ...


class SpeechDetector:
    """Energy-based caller speech detection on inbound frames: `min_ms` of frames at or above `threshold` RMS.

    Called for every inbound frame, so it does one C call (`rms`) and two compares.
    """

    def __init__(self, threshold: int, min_ms: int) -> None:
        self.threshold = threshold
        self.min_ms = min_ms
        self.armed = False
        self.detected = asyncio.Event()
        self._loud_ms = 0.0

    def arm(self) -> None:
        self._loud_ms = 0.0
        self.detected = asyncio.Event()
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def feed(self, payload: bytes, rate: int) -> None:
        if not self.armed:
            return
        if rms(payload) >= self.threshold:
            self._loud_ms += len(payload) * 500 / rate  # bytes -> ms at 16-bit mono
            if self._loud_ms >= self.min_ms:
                self.armed = False
                self.detected.set()
        else:
            self._loud_ms = 0.0
