"""LLM answers benchmark: the latency the bridge adds between the LLM's text and the caller's first audio.

Each call is one `llm` item: the bridge (in this process, as `serve` runs it: runtime, AudioSocket server,
media clock, uvloop) asks the fake OpenAI endpoint (`voice.emulators.llm`, its own process), groups the
streamed pieces into phrases and speaks them over the call's TTS WebSocket, opened when the call started,
to the ElevenLabs emulator (its own process, with a fixed time to first byte, `--tts-ttfb-ms`). A minimal
AudioSocket caller notes when the first non-silent frame arrives, then hangs up. The LLM's time to its
first piece gets 0-20 ms of random extra per call, so answers reach the bridge at every phase of the
call's 20 ms media clock, as real ones do.

Every party stamps CLOCK_MONOTONIC (one clock for all processes on Linux):
- `phrase`: the fake LLM wrote the piece that completed the first phrase (the earliest moment any
  phrase-by-phrase speaker could send it; with OpenAI-like pieces that is the second piece, " чем" after
  "Здравствуйте,");
- `tts`: the TTS emulator wrote its first audio message for that phrase (after its own TTFB);
- `wire`: the caller read the first non-silent frame.

Reported per answer, in ms: `added` = wire - phrase - the TTS emulator's TTFB (everything the bridge adds;
target p99 <= 30), split into `send` = tts - phrase - TTFB (SSE parsing, grouping, the WebSocket send, and
the emulator's own overhead on top of its TTFB, which is counted against the bridge) and `receive` = wire -
tts (websockets, base64, conversion to 8 kHz frames, the call's queue, the wait for the media clock's next
tick for the call: speech after silence is expedited, 0-10 ms, and loopback to the caller); `total` = wire - phrase;
`from_first` = wire - the LLM's very first piece - TTFB (`added` plus the LLM's own time between the first
piece and the one that completed the phrase, `--llm-piece-delay-ms`).

    .venv/bin/python bridge/sim/bench/llm.py [--answers 300] [--tts-ttfb-ms 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
import uuid

import httpx
from pydantic import SecretStr

from bridge.app import BridgeApp
from bridge.config import BridgeConfig, Settings
from bridge.dialogue import parse_dialogue
from bridge.ops.metrics import Metrics
from bridge.protocol import Decoder, Kind, encode_uuid
from bridge.server import AudioSocketServer
from bridge.sim.bench.process import loop_runner, quiet_logs
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, LLMConfig, TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, EmulatorProcess
from voice.emulators.llm import split_pieces
from voice.emulators.redis_server import RedisServer
from voice.llm import PhraseGrouper
from voice.tts_manager import aclose_shared_client

ANSWER = "Здравствуйте, чем могу помочь? Ваш баланс двенадцать тысяч пятьсот рублей."
DIALOGUE = """
start = "answer"
[nodes.answer]
play = [ { llm = "Поздоровайся и назови баланс" } ]
hangup = true
"""
WARM_UP = 5


def percentiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 2), "p90_ms": round(pick(0.90), 2),
            "p99_ms": round(pick(0.99), 2), "max_ms": round(ordered[-1], 2)}


def first_phrase(answer: str) -> tuple[int, str]:
    """(index of the piece that completes the first phrase, that phrase as the TTS emulator logs it)."""
    grouper = PhraseGrouper()
    for index, piece in enumerate(split_pieces(answer)):
        phrases = grouper.feed(piece)
        if phrases:
            return index, phrases[0].strip()
    return len(split_pieces(answer)) - 1, (grouper.flush() or "").strip()


class LLMProcess:
    """`python -m voice.emulators.llm` in a subprocess; `url` once it listens."""

    def __init__(self, *args: str) -> None:
        self.args = [sys.executable, "-m", "voice.emulators.llm", "--port", "0", "--log-level", "warning", *args]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> LLMProcess:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"the LLM emulator did not start: {line!r}")
        self.url = line.split()[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


async def first_audio_at(port: int, call_uuid: uuid.UUID, timeout_s: float = 10.0) -> float:
    """Call, and return the monotonic time the first non-silent frame was read; then hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_uuid(call_uuid))
    decoder = Decoder()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                data = await reader.read(65536)
                now = time.monotonic()
                if not data:
                    raise RuntimeError("the bridge hung up before any audio")
                for kind, payload in decoder.feed(data):
                    if kind == Kind.AUDIO and payload.strip(b"\x00"):
                        return now
    finally:
        writer.close()


async def run(args: argparse.Namespace, tts_url: str, llm_url: str, redis_url: str) -> dict:
    piece_index, phrase = first_phrase(ANSWER)
    settings = Settings(
        bridge=BridgeConfig(port=0, grace_s=0, filler_after_s=0, log_level="warning"),
        cache=CacheConfig(redis_url=redis_url),
        tts=TTSConfig(api_key=SecretStr(DEFAULT_API_KEY), base_url=tts_url, voice_id=DEFAULT_VOICES[0],
                      output_format=args.tts_format),
        llm=LLMConfig(llm_base_url=llm_url, llm_model="bench"),
    )
    await RedisCacheManager.reset_instance()
    runtime = BridgeApp(settings, dialogue=parse_dialogue(DIALOGUE), metrics=Metrics())
    await runtime.start()
    server = AudioSocketServer(settings.bridge, runtime.handle)
    await server.start()
    rows: dict[str, list[float]] = {"added": [], "send": [], "receive": [], "total": [], "from_first": []}
    failures = 0
    jitter = random.Random(7)
    tts_control = httpx.AsyncClient(base_url=tts_url)
    llm_control = httpx.AsyncClient(base_url=llm_url.removesuffix("/v1"))
    try:
        for n in range(WARM_UP + args.answers):
            await tts_control.post("/_emulator/reset")
            await llm_control.post("/_emulator/reset")
            # Round delays would bring every answer to the same phase of the call's 20 ms media clock, and a run
            # would measure one tick wait instead of their spread: the LLM's first piece comes 0-20 ms later.
            first_delay = args.llm_first_delay_ms + jitter.uniform(0, 20)
            await llm_control.post("/_emulator/knobs", json={"first_piece_delay_ms": first_delay})
            try:
                wire = await first_audio_at(server.port, uuid.uuid4())
            except (RuntimeError, TimeoutError, OSError) as exc:
                failures += 1
                print(f"answer {n}: {exc}", file=sys.stderr)
                continue
            llm_log = (await llm_control.get("/_emulator/stats")).json()["log"]
            tts_log = (await tts_control.get("/_emulator/stats")).json()["ws_audio_log"]
            piece_at = llm_log[-1]["piece_at"]
            tts_at = next((e["first_audio_at"] for e in tts_log if e["text"] == phrase), None)
            if len(piece_at) <= piece_index or tts_at is None:
                failures += 1
                continue
            if n < WARM_UP:
                continue
            phrase_at = piece_at[piece_index]
            ttfb_s = args.tts_ttfb_ms / 1000
            rows["total"].append((wire - phrase_at) * 1000)
            rows["added"].append((wire - phrase_at - ttfb_s) * 1000)
            rows["send"].append((tts_at - phrase_at - ttfb_s) * 1000)
            rows["receive"].append((wire - tts_at) * 1000)
            rows["from_first"].append((wire - piece_at[0] - ttfb_s) * 1000)
        await asyncio.sleep(0.2)  # let the last call's hang-up finish
    finally:
        await tts_control.aclose()
        await llm_control.aclose()
        await server.stop(0)
        await runtime.aclose()
        await aclose_shared_client()
        await RedisCacheManager.reset_instance()
    return {"answers": args.answers, "failures": failures, "tts_ttfb_ms": args.tts_ttfb_ms,
            "llm_first_piece_delay_ms": args.llm_first_delay_ms, "llm_piece_delay_ms": args.llm_piece_delay_ms,
            "first_phrase": phrase, "tts_format": args.tts_format,
            "latency": {name: percentiles(values) for name, values in rows.items() if values}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=300, help="answers measured (after a few warm-up calls)")
    parser.add_argument("--tts-ttfb-ms", type=float, default=50.0, help="the TTS emulator's time to first byte")
    parser.add_argument("--tts-format", default="pcm_16000", help="ELEVENLABS_OUTPUT_FORMAT")
    parser.add_argument("--llm-first-delay-ms", type=float, default=100.0, help="the fake LLM's time to first piece")
    parser.add_argument("--llm-piece-delay-ms", type=float, default=20.0, help="the fake LLM's time between pieces")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    quiet_logs()
    runner = loop_runner(args.no_uvloop)
    llm_args = ["--answer", ANSWER, "--first-piece-delay-ms", str(args.llm_first_delay_ms),
                "--piece-delay-ms", str(args.llm_piece_delay_ms)]
    with RedisServer() as redis_server, EmulatorProcess("--log-level", "warning", "--ttfb-ms",
                                                        str(args.tts_ttfb_ms)) as tts, LLMProcess(*llm_args) as llm:
        result = runner(run(args, tts.url, llm.url, redis_server.url))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"LLM first phrase -> first frame on the wire (ms); TTS emulator TTFB {args.tts_ttfb_ms:g} ms, "
          f"{result['answers']} answers, {result['failures']} failed")
    print(f"{'':<10}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, p in result["latency"].items():
        print(f"{name:<10}{p['n']:>6}{p['p50_ms']:>9.2f}{p['p90_ms']:>9.2f}{p['p99_ms']:>9.2f}{p['max_ms']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
