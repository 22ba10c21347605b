"""Spoken turn benchmark: end of the caller's speech -> first answer audio on the wire, at N concurrent calls.

Each call is one spoken LLM turn: the bridge (in this process, as `serve` runs it: runtime, AudioSocket
server, media clock, uvloop) listens (a `listen` node), its recognizer streams the caller's audio to the
Scribe realtime emulator, the final transcript goes to the fake OpenAI endpoint as the user's message, and the
answer is spoken over the call's TTS WebSocket (opened when the call started) by the ElevenLabs emulator. The
three emulators run in processes of their own (STT apart from TTS, through `STT_BASE_URL`: 100 STT sessions
do not delay 100 TTS sessions), with fixed latencies (`--stt-final-ms`, `--llm-first-ms`, `--tts-ttfb-ms`).
`--calls` simulated callers (`bridge.sim.caller.place_call`, sharing one 20 ms sending ticker, in a process
of their own) are on the line at once (connected within a second); each speaks at a random moment of the
next `--spread-s` seconds (5: 100 calls take 20 turns a second; 0: all within one second, a burst), so that
utterances end at every phase of the media clock; `--rounds` batches.

Every party stamps CLOCK_MONOTONIC (one clock for all processes on Linux); caller n says "какой у меня
баланс n" and is answered "Номер n, ...", so each stamp is matched to its call:
- the caller: `spoke`, its last speech frame written; `wire`, the first non-silent answer frame read;
- the STT emulator: the commit received, the final transcript sent;
- the fake LLM: the request received, the piece completing the first phrase ("Номер n,") sent;
- the TTS emulator: that phrase received (its flush), its first audio sent.

Reported per turn, in ms:
- `bridge only`: the bridge's own share, the issue's target (p99 <= 40 ms at 100 calls): `total` minus the
  endpointing silence (`STT_END_SILENCE_MS`, which the bridge must wait by design) and minus what each
  service took *as seen at the service* (so neither the knobs nor the emulators' own CPU count against the
  bridge). It is the sum of four legs: `endpoint` (spoke + the endpointing silence -> the commit received:
  VAD, endpointer, the commit's way out), `to_llm` (final sent -> LLM request received: the transcript's way
  to the dialogue, the request), `to_tts` (first phrase piece sent -> the TTS emulator received the phrase:
  SSE parsing, phrase grouping, the WebSocket send), `to_wire` (first audio sent -> the caller's first
  answer frame: the WebSocket receive, framing, the call's queue, the media clock's tick, loopback);
- `services`: what the services took (STT commit -> final, LLM request -> first phrase, TTS text -> audio);
- `bridge`: the older, coarser figure: `total` minus the endpointing silence and the *knobs'* latencies (the
  LLM's actual time to the first phrase): the emulators' overhead beyond their knobs counts against it;
- `total`: wire - spoke.

    .venv/bin/python bridge/sim/bench/turns.py [--calls 100] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bridge.app import BridgeApp, _freeze_startup_objects
from bridge.config import BridgeConfig, Settings
from bridge.dialogue import parse_dialogue
from bridge.ops.metrics import Metrics
from bridge.server import AudioSocketServer
from bridge.sim.bench.llm import LLMProcess, first_phrase, percentiles
from bridge.sim.bench.process import loop_runner, quiet_logs
from bridge.sim.caller import place_call, sender_stats
from voice.cache import RedisCacheManager
from voice.config import CacheConfig, LLMConfig, TTSConfig
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, EmulatorProcess
from voice.emulators.redis_server import RedisServer
from voice.stt import STTConfig
from voice.tts_manager import aclose_shared_client

ANSWER = "Номер {n}, сейчас проверю. Ваш баланс двенадцать тысяч пятьсот рублей."
"""The answer to caller n (the number tells the TTS generations apart; the first phrase is "Номер n,")."""
QUESTION = "какой у меня баланс {n}"
"""What caller n says (the number tells the STT transcripts and the LLM requests apart)."""
LEGS = ("endpoint", "to_llm", "to_tts", "to_wire")
"""The bridge's legs of a turn, each measured between two parties' stamps (see the module docstring)."""
DIALOGUE = """
start = "ask"
[nodes.ask]
listen = { into = "reply", timeout_s = 10 }
next = "answer"
no_input = "bye"
[nodes.answer]
play = [ { llm = "{reply}" } ]
hangup = true
[nodes.bye]
play = [ { tts = "Пока" } ]
hangup = true
"""
FRAME_S = 0.02
SPEAK_AFTER_S = 1.0
"""The caller starts speaking this long after its UUID (the recognizer's session is up by then)."""


async def callers(port: int, calls: int, seed: int, spread_s: float) -> list[dict[str, float] | str]:
    """Place `calls` calls at once (connected within a second, all on the line together), each speaking at a
    random moment of the next `spread_s` seconds; per call the monotonic time its speech ended and the first
    answer frame arrived, or what went wrong. Runs in its own process (`--callers`), so the bridge's process
    paces only the bridge, and the callers' shared ticker sends steadily."""
    jitter = random.Random(seed)

    async def one(n: int) -> dict[str, float] | str:
        await asyncio.sleep(jitter.uniform(0, 1.0))
        say_at = SPEAK_AFTER_S + jitter.uniform(0, spread_s)
        report = await place_call("127.0.0.1", port, duration_s=None, say=[(say_at, QUESTION.format(n=n))],
                                  keep_audio=True, max_wait_s=20 + spread_s)
        if not report.said_ms:
            return f"call {n}: ended before speaking ({report.hangup}, {report.error})"
        end_ms = report.said_ms[0]  # its last speech frame was written then (ms after the UUID)
        audio: bytes = report.audio
        for i, at in enumerate(report.arrivals_ms):
            if at > end_ms and audio[i * 320:(i + 1) * 320].strip(b"\x00"):
                return {"n": n, "spoke": report.uuid_at + end_ms / 1000, "wire": report.uuid_at + at / 1000}
        return f"call {n}: no answer ({report.hangup}, {report.error})"

    results: list[dict[str, float] | str] = list(await asyncio.gather(*(one(n) for n in range(calls))))
    print(f"callers' sender: {sender_stats()}", file=sys.stderr)
    return results


async def place_callers(port: int, calls: int, seed: int, spread_s: float) -> list[dict[str, float] | str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.sim.bench.turns", "--callers", str(port), "--calls", str(calls),
        "--seed", str(seed), "--spread-s", str(spread_s), stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"the callers' process failed with status {process.returncode}")
    result: list[dict[str, float] | str] = json.loads(out)
    return result


def answers(calls: int) -> dict[str, str]:
    """The fake LLM's `answers` knob: caller n's question -> its answer (keys are the question's end)."""
    return {QUESTION.format(n=n).removeprefix("какой у меня "): ANSWER.format(n=n) for n in range(calls)}


def turn_legs(spoke: float, wire: float, commit: dict[str, float], llm: dict, piece_index: int,
              tts: dict[str, float], end_silence_s: float) -> dict[str, float]:
    """One turn's figures in ms from the parties' CLOCK_MONOTONIC stamps: the four legs that are the bridge's
    (`endpoint`: end of speech + the endpointing silence -> the STT service received the commit; `to_llm`:
    the final transcript sent -> the LLM request received; `to_tts`: the LLM sent the piece completing the
    first phrase -> the TTS service received that phrase; `to_wire`: the TTS service sent its first audio ->
    the caller read the first answer frame), `bridge only` (their sum: the turn minus the endpointing silence
    and what each service took as seen at the service), and `services` (that time)."""
    legs = {
        "endpoint": commit["commit_at"] - spoke - end_silence_s,
        "to_llm": llm["received_at"] - commit["final_at"],
        "to_tts": tts["text_at"] - llm["piece_at"][piece_index],
        "to_wire": wire - tts["first_audio_at"],
    }
    services = ((commit["final_at"] - commit["commit_at"]) + (llm["piece_at"][piece_index] - llm["received_at"])
                + (tts["first_audio_at"] - tts["text_at"]))
    figures = {"bridge only": sum(legs.values()), **legs, "services": services}
    return {name: value * 1000 for name, value in figures.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to tell a busy emulator from a slow bridge."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_s(pid: int | str = "self") -> float:
    """Seconds the process's main thread has waited for a CPU while runnable (/proc/PID/schedstat): on a
    shared machine, the time other processes took from it (a stall the bridge did not cause)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


async def run(args: argparse.Namespace, tts_url: str, stt_url: str, llm_url: str, redis_url: str,
              emulators: dict[str, int]) -> dict:
    phrases = {n: first_phrase(ANSWER.format(n=n)) for n in range(args.calls)}
    settings = Settings(
        bridge=BridgeConfig(port=0, grace_s=0, filler_after_s=0, log_level="warning", max_calls=10 * args.calls),
        cache=CacheConfig(redis_url=redis_url),
        tts=TTSConfig(api_key=SecretStr(DEFAULT_API_KEY), base_url=tts_url, voice_id=DEFAULT_VOICES[0],
                      output_format=args.tts_format),
        llm=LLMConfig(llm_base_url=llm_url, llm_model="bench"),
        stt=STTConfig(stt_provider="elevenlabs", stt_end_silence_ms=args.end_silence_ms, stt_base_url=stt_url),
    )
    await RedisCacheManager.reset_instance()
    runtime = BridgeApp(settings, dialogue=parse_dialogue(DIALOGUE), metrics=Metrics())
    await runtime.start()
    server = AudioSocketServer(settings.bridge, runtime.handle)
    await server.start()
    _freeze_startup_objects()  # as serve does: full GC passes kept away from the calls' audio
    rows: dict[str, list[float]] = {name: [] for name in ("bridge only", *LEGS, "services", "bridge", "total")}
    failures = 0
    llm_control = httpx.AsyncClient(base_url=llm_url.removesuffix("/v1"))
    tts_control = httpx.AsyncClient(base_url=tts_url)
    stt_control = httpx.AsyncClient(base_url=stt_url)
    fixed_s = (args.end_silence_ms + args.stt_final_ms + args.tts_ttfb_ms) / 1000
    try:
        cpu_s = wall_s = waited_s = 0.0
        emulator_cpu_s = dict.fromkeys([*emulators, "callers"], 0.0)
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for control in (llm_control, tts_control, stt_control):
                await control.post("/_emulator/reset")
            if round_ == 1:
                server.clock.reset_stats()
            cpu0, wall0, waited0 = time.process_time(), time.monotonic(), runqueue_wait_s()
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the callers' process, once it ended
            emulator_cpu0 = {name: cpu_seconds(pid) for name, pid in emulators.items()}
            results = await place_callers(server.port, args.calls, seed=round_, spread_s=args.spread_s)
            if round_:
                cpu_s += time.process_time() - cpu0
                waited_s += runqueue_wait_s() - waited0
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                emulator_cpu_s["callers"] += (children.ru_utime + children.ru_stime
                                              - children0.ru_utime - children0.ru_stime)
                wall_s += time.monotonic() - wall0
                for name, pid in emulators.items():
                    emulator_cpu_s[name] += cpu_seconds(pid) - emulator_cpu0[name]
            requests = {e["prompt"]: e for e in (await llm_control.get("/_emulator/stats")).json()["log"]}
            commits = {e["text"]: e for e in (await stt_control.get("/_emulator/stats")).json()["commit_log"]}
            generations = {e["text"]: e for e in (await tts_control.get("/_emulator/stats")).json()["ws_audio_log"]}
            for n, result in enumerate(results):
                piece_index, phrase = phrases[n]
                entry = requests.get(QUESTION.format(n=n))
                commit = commits.get(QUESTION.format(n=n))
                generation = generations.get(phrase)
                pieces = entry.get("piece_at") or [] if entry is not None else []
                if isinstance(result, str) or entry is None or len(pieces) <= piece_index or None in (
                        commit, generation):
                    failures += 1
                    print(f"round {round_} call {n}: {result!r}, LLM request: {entry is not None}, STT commit: "
                          f"{commit is not None}, TTS generation: {generation is not None}", file=sys.stderr)
                    continue
                if round_ == 0:
                    continue
                assert commit is not None and generation is not None and not isinstance(result, str)
                spoke, wire = result["spoke"], result["wire"]
                for name, value in turn_legs(spoke, wire, commit, entry, piece_index, generation,
                                             args.end_silence_ms / 1000).items():
                    rows[name].append(value)
                llm_s = pieces[piece_index] - entry["received_at"]
                total = wire - spoke
                rows["total"].append(total * 1000)
                rows["bridge"].append((total - fixed_s - llm_s) * 1000)
            await asyncio.sleep(0.3)
    finally:
        await llm_control.aclose()
        await tts_control.aclose()
        await stt_control.aclose()
        await server.stop(0)
        await runtime.aclose()
        await aclose_shared_client()
        await RedisCacheManager.reset_instance()
    return {"calls": args.calls, "rounds": args.rounds, "failures": failures, "end_silence_ms": args.end_silence_ms,
            "stt_final_ms": args.stt_final_ms, "llm_first_ms": args.llm_first_ms, "tts_ttfb_ms": args.tts_ttfb_ms,
            "tts_format": args.tts_format, "spread_s": args.spread_s,
            "bridge_cpu_share": round(cpu_s / wall_s, 3) if wall_s else None,
            "bridge_runqueue_wait_share": round(waited_s / wall_s, 3) if wall_s else None,
            "emulators_cpu_share": {name: round(cpu / wall_s, 3) for name, cpu in emulator_cpu_s.items()}
            if wall_s else None,
            "clock": server.clock.stats(),
            "latency": {name: percentiles(values) for name, values in rows.items() if values}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="concurrent conversations per round")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (after one warm-up round)")
    parser.add_argument("--spread-s", type=float, default=5.0,
                        help="the calls' utterances start over this many seconds (0: all within one second)")
    parser.add_argument("--end-silence-ms", type=int, default=600, help="STT_END_SILENCE_MS")
    parser.add_argument("--stt-final-ms", type=float, default=50.0, help="the STT emulator's commit -> final delay")
    parser.add_argument("--llm-first-ms", type=float, default=100.0, help="the fake LLM's time to first piece")
    parser.add_argument("--tts-ttfb-ms", type=float, default=50.0, help="the TTS emulator's time to first byte")
    parser.add_argument("--tts-format", default="pcm_16000", help="ELEVENLABS_OUTPUT_FORMAT")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--callers", type=int, default=0, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.callers:  # the callers' process
        print(json.dumps(asyncio.run(callers(args.callers, args.calls, args.seed, args.spread_s))))
        return 0
    quiet_logs()
    runner = loop_runner(args.no_uvloop)
    llm_args = ["--knobs", json.dumps({"answers": answers(args.calls)}, ensure_ascii=False),
                "--first-piece-delay-ms", str(args.llm_first_ms), "--piece-delay-ms", "10"]
    stt_args = ["--api-key", DEFAULT_API_KEY, "--knobs", json.dumps({"final_delay_ms": args.stt_final_ms})]
    with (RedisServer() as redis_server,
          EmulatorProcess("--log-level", "warning", "--ttfb-ms", str(args.tts_ttfb_ms)) as tts,
          EmulatorProcess(*stt_args, module="voice.emulators.stt") as stt,
          LLMProcess(*llm_args) as llm):
        pids = {"tts": tts.process.pid, "stt": stt.process.pid, "llm": llm.process.pid}  # type: ignore[union-attr]
        result = runner(run(args, tts.url, stt.url, llm.url, redis_server.url, pids))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"end of caller speech -> first answer audio on the wire (ms); {result['calls']} concurrent calls "
          f"speaking over {args.spread_s:g} s x {result['rounds']} rounds, {result['failures']} failed; "
          f"endpointing {args.end_silence_ms} ms, STT final "
          f"{args.stt_final_ms:g} ms, LLM first piece {args.llm_first_ms:g} ms, TTS TTFB {args.tts_ttfb_ms:g} ms")
    print(f"the bridge's process used {result['bridge_cpu_share']} of a core while the calls ran, and waited for "
          f"a CPU {result['bridge_runqueue_wait_share']} of the time (other processes on the machine)")
    clock = result["clock"]
    print(f"the other processes used {result['emulators_cpu_share']} of a core; the media clock "
          f"resynchronised {clock['resyncs']} times, its lateness {clock['lateness']}")
    print(f"{'':<12}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, p in result["latency"].items():
        print(f"{name:<12}{p['n']:>6}{p['p50_ms']:>9.2f}{p['p90_ms']:>9.2f}{p['p99_ms']:>9.2f}{p['max_ms']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
