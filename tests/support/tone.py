"""The test tone's samples, and the continuous sine it must equal."""

from __future__ import annotations

import math
import sys
from array import array

from bridge.protocol import SAMPLE_RATE


def samples(pcm: bytes) -> list[int]:
    values = array("h")
    values.frombytes(pcm)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return list(values)


def continuous_sine(frequency_hz: float, count: int, amplitude: int = 8000) -> list[int]:
    step = 2 * math.pi * frequency_hz / SAMPLE_RATE
    return [round(amplitude * math.sin(step * i)) for i in range(count)]
