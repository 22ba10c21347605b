"""Resampling benchmark: CPU per second of audio of the old converter (audioop.ratecv, no anti-alias filter),
the band-limited one in `voice.audio` (polyphase Kaiser FIR), and libsoxr's streaming resampler when the
`soxr` package is installed (it is not a dependency: see voice/audio.py for why it is not used).

Each converter gets `--seconds` of noise at each provider rate in `--chunk`-byte pieces (a provider's chunk
size) and the CPU time (`time.process_time`) is divided by the seconds of audio: the share of one core a
real-time stream costs. The first-output latency (how much input a converter takes before it gives any
output, and how much it still holds back mid-stream) is reported too.

    .venv/bin/python bridge/sim/bench/audio.py [--seconds 20] [--chunk 4096] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from voice.audio import Resampler, audioop
from voice.formats import PCM_RATES

Converter = Callable[[bytes], bytes]


def _ratecv(rate: int) -> tuple[Converter, Callable[[], bytes]]:
    state = None

    def feed(data: bytes) -> bytes:
        nonlocal state
        out, state = audioop.ratecv(data, 2, 1, rate, 8000, state)
        return out

    return feed, lambda: b""


def _ours(rate: int) -> tuple[Converter, Callable[[], bytes]]:
    resampler = Resampler(rate)
    return resampler.feed, resampler.flush


def _soxr(rate: int) -> tuple[Converter, Callable[[], bytes]] | None:
    try:
        import soxr  # type: ignore[import-not-found]
    except ImportError:
        return None
    stream = soxr.ResampleStream(rate, 8000, 1, dtype="float32", quality="HQ")

    def feed(data: bytes) -> bytes:
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
        return (np.clip(np.rint(stream.resample_chunk(x) * 32768), -32768, 32767)).astype("<i2").tobytes()

    def flush() -> bytes:
        y = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        return (np.clip(np.rint(y * 32768), -32768, 32767)).astype("<i2").tobytes()

    return feed, flush


CONVERTERS: dict[str, Callable[[int], tuple[Converter, Callable[[], bytes]] | None]] = {
    "audioop.ratecv": _ratecv, "voice.audio": _ours, "soxr HQ": _soxr,
}


def measure(name: str, rate: int, seconds: float, chunk: int) -> dict[str, float] | None:
    made = CONVERTERS[name](rate)
    if made is None:
        return None
    feed, flush = made
    data = np.random.default_rng(1).integers(-8000, 8000, int(rate * seconds)).astype("<i2").tobytes()
    out = 0
    held_ms = 0.0
    fed = 0
    started = time.process_time()
    for i in range(0, len(data), chunk):
        piece = data[i : i + chunk]
        out += len(feed(piece))
        fed += len(piece)
        held_ms = max(held_ms, (fed / 2 / rate - out / 2 / 8000) * 1000)
    out += len(flush())
    cpu = time.process_time() - started
    return {"cpu_us_per_audio_s": round(cpu / seconds * 1e6, 1), "max_held_back_ms": round(held_ms, 1),
            "output_s": round(out / 16000, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per rate and converter [20]")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per fed piece [4096]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.chunk <= 0 or args.chunk % 2:
        parser.error("--seconds must be positive and --chunk a positive even number")
    results: dict[str, dict[str, dict[str, float] | None]] = {}
    for fmt, rate in PCM_RATES.items():
        if rate == 8000:
            continue
        results[fmt] = {name: measure(name, rate, args.seconds, args.chunk) for name in CONVERTERS}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'format':<10} {'converter':<15} {'CPU us / s of audio':>20} {'held back (ms)':>15}")
    for fmt, row in results.items():
        for name, figures in row.items():
            if figures is None:
                print(f"{fmt:<10} {name:<15} {'(not installed)':>20}")
            else:
                cpu, held = figures["cpu_us_per_audio_s"], figures["max_held_back_ms"]
                print(f"{fmt:<10} {name:<15} {cpu:>20.1f} {held:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
