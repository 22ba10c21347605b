"""WAV files written with the stdlib (and raw ones `wave` cannot write), and 16-bit sample packing."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def sine(rate: int, freq: float, count: int, amplitude: float) -> list[int]:
    return [round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(count)]


def write_pcm_wav(path: Path, frames: bytes, rate: int, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


def write_raw_wav(path: Path, format_tag: int, rate: int, width: int, channels: int, data: bytes) -> Path:
    """A WAV file with an arbitrary format tag (e.g. 3 = IEEE float, 6 = A-law), which `wave` cannot write."""
    block = width * channels
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block, block, width * 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def s16(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def from_s16(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))
