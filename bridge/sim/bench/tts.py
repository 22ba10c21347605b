"""TTS benchmark: first provider byte -> first 8 kHz frame, and conversion cost per second of audio.

1. Latency. The emulator runs in its own process (`EmulatorProcess`) and notes `time.monotonic()` just
   before it writes the first audio byte of each answer (HTTP) or its first audio message (WebSocket). The
   client notes the same clock (CLOCK_MONOTONIC, shared by all processes on Linux) when the first 20 ms
   8 kHz frame comes out of `FrameStream`. The difference is everything this side adds: loopback transfer,
   httpx / websockets parsing, JSON + base64 (WebSocket), sample alignment and conversion. Target p99 <= 2 ms.
2. Conversion cost: `FrameStream` over 10 s of audio in 4096-byte chunks, per input format: microseconds of
   CPU per second of audio (and per 20 ms frame), i.e. the share of one core a real-time stream costs.

    .venv/bin/python bridge/sim/bench/tts.py [--requests 300] [--formats pcm_16000,ulaw_8000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import httpx
from pydantic import SecretStr

from bridge.sim.bench.process import loop_runner, quiet_logs
from voice.audio import FrameStream
from voice.config import OUTPUT_FORMATS, TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, EmulatorProcess, synthesize
from voice.formats import bytes_per_sample, source_rate
from voice.tts_manager import TTSManager, WebSocketConnectionManager, aclose_shared_client


def percentiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(pick(0.90), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(ordered[-1], 3),
    }


async def http_latency(url: str, output_format: str, requests: int) -> list[float]:
    config = TTSConfig(api_key=SecretStr(DEFAULT_API_KEY), base_url=url, output_format=output_format)
    tts = TTSManager(config, WebSocketConnectionManager(config))
    first_frame_at: dict[str, float] = {}
    for i in range(requests):
        text = f"http {output_format} {i}"
        async for _frame in tts.stream_static_frames(text):
            first_frame_at.setdefault(text, time.monotonic())
    async with httpx.AsyncClient(base_url=url) as client:
        stats = (await client.get("/_emulator/stats")).json()
    first_byte_at = {r["body"]["text"]: r["first_byte_at"] for r in stats["requests"] if "first_byte_at" in r}
    await aclose_shared_client()
    return [(first_frame_at[t] - first_byte_at[t]) * 1000 for t in first_frame_at if t in first_byte_at]


async def ws_latency(url: str, output_format: str, turns: int) -> list[float]:
    config = TTSConfig(api_key=SecretStr(DEFAULT_API_KEY), base_url=url, output_format=output_format)
    tts = TTSManager(config, WebSocketConnectionManager(config))
    first_frame_at: dict[str, float] = {}
    try:
        for i in range(turns):
            text = f"ws {output_format} {i}"
            frames = FrameStream(output_format)
            text_queue, audio_queue = await tts.start_llm_stream()
            await text_queue.put(text + " ")
            await text_queue.put(None)
            while (item := await audio_queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if frames.feed(item):
                    first_frame_at.setdefault(text, time.monotonic())
    finally:
        await tts.aclose()
    async with httpx.AsyncClient(base_url=url) as client:
        stats = (await client.get("/_emulator/stats")).json()
    first_audio_at = {g["text"]: g["first_audio_at"] for g in stats["ws_audio_log"]}
    return [(first_frame_at[t] - first_audio_at[t]) * 1000 for t in first_frame_at if t in first_audio_at]


def conversion_cost(output_format: str, seconds: float = 10.0, repeats: int = 5, chunk: int = 4096) -> dict:
    audio = synthesize("x" * int(seconds * 1000 / 60), output_format)
    duration = len(audio) / (source_rate(output_format) * bytes_per_sample(output_format))
    best = float("inf")
    for _ in range(repeats):
        stream = FrameStream(output_format)
        started = time.perf_counter()
        frames = 0
        for i in range(0, len(audio), chunk):
            frames += len(stream.feed(audio[i : i + chunk]))
        frames += len(stream.flush())
        best = min(best, time.perf_counter() - started)
    per_second_us = best / duration * 1e6
    return {
        "format": output_format,
        "us_per_audio_second": round(per_second_us, 1),
        "us_per_frame": round(best / frames * 1e6, 2),
        "core_share_per_stream_pct": round(per_second_us / 1e4, 4),
    }


async def latency(url: str, formats: list[str], requests: int) -> dict:
    results = {}
    for output_format in formats:
        results[f"http {output_format}"] = percentiles(await http_latency(url, output_format, requests))
        results[f"ws {output_format}"] = percentiles(await ws_latency(url, output_format, requests))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="HTTP requests and WebSocket turns per format")
    parser.add_argument("--formats", default="pcm_16000,ulaw_8000", help="formats for the latency runs")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    quiet_logs()
    formats = [f for f in args.formats.split(",") if f]

    runner = loop_runner(args.no_uvloop)
    with EmulatorProcess("--log-level", "warning") as emulator:
        lat = runner(latency(emulator.url, formats, args.requests))
    costs = [conversion_cost(f) for f in OUTPUT_FORMATS]

    if args.json:
        print(json.dumps({"latency": lat, "conversion": costs}, indent=2))
        return 0
    print("first emulator byte -> first 8 kHz frame (ms)")
    print(f"{'path':<18}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, p in lat.items():
        print(f"{name:<18}{p['n']:>6}{p['p50_ms']:>9.3f}{p['p90_ms']:>9.3f}{p['p99_ms']:>9.3f}{p['max_ms']:>9.3f}")
    print()
    print("conversion to 8 kHz frames (FrameStream, 4096-byte chunks)")
    print(f"{'format':<12}{'us per audio s':>16}{'us per frame':>14}{'% of a core':>13}")
    for c in costs:
        print(f"{c['format']:<12}{c['us_per_audio_second']:>16.1f}{c['us_per_frame']:>14.2f}"
              f"{c['core_share_per_stream_pct']:>13.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
