"""Benchmark of the caller-side speech pipeline's cost per inbound frame: VAD alone, and VAD + endpointer.

    .venv/bin/python bridge/sim/bench/vad.py            # 30 s of mixed audio per format, 5 rounds
    .venv/bin/python bridge/sim/bench/vad.py --quick    # a short run while developing
    .venv/bin/python bridge/sim/bench/vad.py --json

It runs for every listening call 50 times a second, on the event loop that also paces every call's media,
so the figures that matter are µs per frame and the share of one core a call costs (µs per call-second =
50 x µs per frame; 10,000 µs per call-second = 1 % of a core). The audio mixes silence, line noise,
speech-like noise and tone-coded speech, so every branch (energy gate, webrtcvad, endpointing events) runs;
an all-speech run gives the worst case, where every frame reaches webrtcvad.
"""

from __future__ import annotations

import argparse
import audioop
import json
import random
import statistics
import time
from array import array

from bridge.sim.caller import speech_noise_frames
from voice.audio import FRAME_BYTES, SAMPLE_RATE, to_frames
from voice.emulators.tone_code import synthesize_pcm
from voice.stt.endpointer import Endpointer, EndpointerConfig
from voice.stt.vad import FRAME_BYTES_BY_FORMAT, VoiceActivityDetector

FRAMES_PER_S = 50


def mixed_audio(seconds: float, seed: int = 1) -> list[bytes]:
    """8 kHz frames: silence, hiss, speech-like noise and tone-coded words, in turn."""
    rng = random.Random(seed)
    speech = speech_noise_frames(2.0)
    words = to_frames(synthesize_pcm("да, конечно, подтверждаю", SAMPLE_RATE))
    out: list[bytes] = []
    while len(out) < seconds * FRAMES_PER_S:
        out += [bytes(FRAME_BYTES)] * 25
        out += [array("h", [rng.randint(-200, 200) for _ in range(FRAME_BYTES // 2)]).tobytes() for _ in range(25)]
        out += speech + [bytes(FRAME_BYTES)] * 40 + words + [bytes(FRAME_BYTES)] * 40
    return out[: int(seconds * FRAMES_PER_S)]


def convert(frames: list[bytes], fmt: str) -> list[bytes]:
    if fmt == "ulaw_8000":
        return [audioop.lin2ulaw(f, 2) for f in frames]
    if fmt == "pcm_16000":
        state = None
        out = []
        for f in frames:
            up, state = audioop.ratecv(f, 2, 1, SAMPLE_RATE, 16000, state)
            size = FRAME_BYTES_BY_FORMAT["pcm_16000"]
            out.append(up.ljust(size, b"\x00")[:size])
        return out
    return frames


def make(fmt: str, gated: bool) -> VoiceActivityDetector:
    """The production detector, or one whose energy gate passes everything (every frame reaches webrtcvad)."""
    return VoiceActivityDetector(fmt) if gated else VoiceActivityDetector(fmt, min_rms=0, floor_ratio=0.0)


def measure(frames: list[bytes], fmt: str, rounds: int, *, gated: bool = True) -> dict[str, float | int | str]:
    vad_only: list[float] = []  # µs per frame, one per round
    full: list[float] = []
    events = 0
    for _ in range(rounds):
        vad = make(fmt, gated)
        t0 = time.perf_counter_ns()
        for frame in frames:
            vad.is_speech(frame)
        vad_only.append((time.perf_counter_ns() - t0) / len(frames) / 1000)
        vad = make(fmt, gated)
        ep = Endpointer(EndpointerConfig())
        t0 = time.perf_counter_ns()
        for frame in frames:
            events += len(ep.update(vad.is_speech(frame)))
        full.append((time.perf_counter_ns() - t0) / len(frames) / 1000)
    per_frame = statistics.median(full)
    return {"format": fmt, "frames": len(frames), "vad_us_per_frame": round(statistics.median(vad_only), 2),
            "vad_endpointer_us_per_frame": round(per_frame, 2),
            "us_per_call_second": round(per_frame * FRAMES_PER_S, 1),
            "core_percent_per_100_calls": round(per_frame * FRAMES_PER_S * 100 / 1e4, 2),
            "events": events // rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per format [30]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported [5]")
    parser.add_argument("--quick", action="store_true", help="5 s, 2 rounds")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    seconds, rounds = (5.0, 2) if args.quick else (args.seconds, args.rounds)
    mixed = mixed_audio(seconds)
    for fmt, audio in [(f, "mixed") for f in ("pcm_8000", "ulaw_8000", "pcm_16000")] + [
            (f, "ungated") for f in ("pcm_8000", "ulaw_8000", "pcm_16000")]:
        # ungated: the worst case, every frame goes through webrtcvad (no energy gate)
        result = {"audio": audio, **measure(convert(mixed, fmt), fmt, rounds, gated=audio == "mixed")}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{fmt:>9} {audio:>10}: VAD {result['vad_us_per_frame']:6.2f} µs/frame, VAD+endpointer "
                  f"{result['vad_endpointer_us_per_frame']:6.2f} µs/frame = {result['us_per_call_second']:7.1f} "
                  f"µs per call-second ({result['core_percent_per_100_calls']:.2f} % of a core per 100 calls), "
                  f"{result['events']} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
