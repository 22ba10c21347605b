"""Barge-in detection: does the caller speak over the prompt?

A detector is fed every inbound frame (the call's `on_audio` callback, 50 times a second per call), and
sets `detected` when the caller has been speaking long enough. `bridge.playlist` arms it for a node with
`barge_in = true` and stops the prompt when it fires.

Two detectors (`BARGE_IN_MODE`): `SpeechDetector` counts loud frames (energy: line noise or a cough above
`BARGE_IN_RMS` stops a prompt too); `VadBargeIn` asks webrtcvad and the speech endpointer of `voice.stt`
(speech of `STT_BARGE_IN_MS`, a blip never), and is the default when a recognizer is configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from voice.audio import rms
from voice.stt.base import endpointer_config, voice_activity_detector
from voice.stt.config import STTConfig
from voice.stt.endpointer import BargeIn, Endpointer
from voice.stt.vad import FrameClassifier

__all__ = ["BARGE_IN_MODES", "BargeInDetector", "SpeechDetector", "VadBargeIn", "barge_in_mode"]

BARGE_IN_MODES = ("auto", "vad", "energy")


def barge_in_mode(mode: str, stt: STTConfig) -> str:
    """`vad` or `energy`: `auto` is `vad` when a recognizer is configured (its VAD settings are tuned then)."""
    if mode not in BARGE_IN_MODES:
        raise ValueError(f"BARGE_IN_MODE must be one of {', '.join(BARGE_IN_MODES)}, got {mode!r}")
    if mode == "auto":
        return "vad" if stt.enabled else "energy"
    return mode


class BargeInDetector(Protocol):
    """What the playlist needs from a detector: arm/disarm around a prompt, and the event it sets."""

    detected: asyncio.Event

    def arm(self) -> None: ...

    def disarm(self) -> None: ...

    def feed(self, payload: bytes, rate: int, voiced: bool | None = None) -> None: ...


class SpeechDetector:
    """Energy-based caller speech detection on inbound frames: `min_ms` of frames at or above `threshold` RMS.

    Called for every inbound frame while armed, so it does one C call (`rms`) and two compares. Disarmed it
    needs no frame at all: `on_armed` (when set) hears each arm and disarm, so the call can stop handing
    frames over while no prompt can be interrupted.
    """

    def __init__(self, threshold: int, min_ms: int) -> None:
        self.threshold = threshold
        self.min_ms = min_ms
        self.armed = False
        self.detected = asyncio.Event()
        self.on_armed: Callable[[bool], None] | None = None
        self._loud_ms = 0.0

    def arm(self) -> None:
        self._loud_ms = 0.0
        self.detected = asyncio.Event()
        self.armed = True
        if self.on_armed is not None:
            self.on_armed(True)

    def disarm(self) -> None:
        self.armed = False
        if self.on_armed is not None:
            self.on_armed(False)

    def feed(self, payload: bytes, rate: int, voiced: bool | None = None) -> None:
        """`voiced` (a VAD's decision) is not what energy detection goes by: ignored."""
        if not self.armed:
            return
        if rms(payload) >= self.threshold:
            self._loud_ms += len(payload) * 500 / rate  # bytes -> ms at 16-bit mono
            if self._loud_ms >= self.min_ms:
                self.armed = False
                self.detected.set()
        else:
            self._loud_ms = 0.0


class VadBargeIn:
    """Barge-in on speech: webrtcvad's decision per frame (gated by the line's noise floor), and the
    endpointer's `BargeIn` once an utterance has `STT_BARGE_IN_MS` of voiced audio. A cough or a click starts
    an utterance but is too short to interrupt; steady line noise is under the floor.

    Fed with 20 ms 8 kHz slin frames all the time (the noise floor must follow the line even while no
    prompt plays); it fires only while armed. Its VAD (`vad`) is the call's one VAD: `Inbound` classifies
    each frame once with it and hands the decision to this detector and to the recognizer's endpointer
    (one webrtcvad pass a frame, not two); fed without a decision, it classifies the frame itself, so it
    works without a recognizer.
    """

    def __init__(self, vad: FrameClassifier, endpointer: Endpointer) -> None:
        self.vad = vad
        self.endpointer = endpointer
        self.armed = False
        self.detected = asyncio.Event()

    @classmethod
    def from_config(cls, stt: STTConfig) -> VadBargeIn:
        return cls(voice_activity_detector(stt), Endpointer(endpointer_config(stt)))

    def arm(self) -> None:
        self.detected = asyncio.Event()
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def feed(self, payload: bytes, rate: int, voiced: bool | None = None) -> None:
        if voiced is None:
            voiced = self.vad.is_speech(payload)
        for decision in self.endpointer.update(voiced):
            if isinstance(decision, BargeIn) and self.armed:
                self.armed = False
                self.detected.set()
