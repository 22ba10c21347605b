"""The AudioSocket server: accept loop, call registry and cap, graceful shutdown, and `voice-bridge serve`.

Asterisk connects one TCP socket per call. Each connection is a `bridge.call.Call` (an asyncio Protocol);
once its UUID has arrived the call joins the shared media clock (silence from the next tick) and the
handler runs as the call's main task. When the handler returns the call keeps playing silence until one
side hangs up. The handler is injected (`AudioSocketServer(config, handler)`); `voice-bridge serve` runs
the dialogue orchestrator (`bridge.runtime.BridgeRuntime.handle`), or a test tone or silence.

Signals (`voice-bridge serve`): SIGTERM/SIGINT stop accepting and give calls `BRIDGE_SHUTDOWN_GRACE`
seconds to end, then hang them up with 0x00 (a second signal hangs them up at once); SIGUSR1 logs the media
clock's statistics (`clock stats`: tick lateness and tick work p50/p99/max) and starts them afresh, which is
how `voice-bridge bench` measures a steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from bridge.call import Call, CallHost
from bridge.clock import MediaClock
from bridge.config import BridgeConfig, Settings, add_settings_flags, settings_from_args
from bridge.ops.logs import configure_logging, register_settings_secrets, settings_for_log
from bridge.ops.metrics import Metrics
from bridge.protocol import FRAME_BYTES, SAMPLE_RATE
from bridge.ops.workers import DUPLICATE_SIGNAL_S


if TYPE_CHECKING:
    from bridge.dialogue import Dialogue

__all__ = [
    "AudioSocketServer", "Handler", "silence_handler", "tone_handler", "tone_frame", "line_test_handler",
    "run_event_loop", "serve", "configure_parser", "run",
]

log = structlog.get_logger(__name__)

Handler = Callable[[Call], Awaitable[None]]


# --- handlers -------------------------------------------------------------------------------------------


async def silence_handler(call: Call) -> None:
    """Say nothing: the media clock keeps the line alive with silence until someone hangs up."""
    return None


def tone_frame(frequency_hz: float, amplitude: int = 8000) -> bytes:
    """One 20 ms slin frame of a sine tone; choose a frequency with a whole number of periods in 20 ms
    (a multiple of 50 Hz) so that repeating the frame is seamless."""
    samples = FRAME_BYTES // 2
    out = bytearray()
    for i in range(samples):
        value = int(round(amplitude * math.sin(2 * math.pi * frequency_hz * i / SAMPLE_RATE)))
        out += value.to_bytes(2, "little", signed=True)
    return bytes(out)


def tone_handler(frequency_hz: float = 400.0) -> Handler:
    """A handler that plays a continuous test tone (the frame is computed once)."""
    frame = tone_frame(frequency_hz)

    async def play_tone(call: Call) -> None:
        await call.play_frames(itertools.repeat(frame))

    return play_tone


def line_test_handler(*, tone_hz: float | None = None, silence: bool = False) -> Handler | None:
    """`serve --tone HZ` / `serve --silence`: line tests without a dialogue (pacing checks, benchmarks)."""
    if tone_hz:
        return tone_handler(tone_hz)
    if silence:
        return silence_handler
    return None


# --- the server -----------------------------------------------------------------------------------------


class AudioSocketServer(CallHost):
    """Listens for AudioSocket connections and runs `handler(call)` for each call once its UUID arrived."""

    def __init__(
        self,
        config: BridgeConfig,
        handler: Handler | None = None,
        clock: MediaClock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.handler: Handler = handler or silence_handler
        self.clock = clock or MediaClock()
        self.metrics = metrics
        """When given: counts refused connections and reads this server's live figures (`Metrics.watch`)."""
        if metrics is not None:
            metrics.watch(self)
        self.calls: set[Call] = set()
        """Live calls: their UUID has arrived and they have not hung up."""
        self.connections: set[Call] = set()
        """Every open connection, established or not."""
        self.pending: dict[Call, None] = {}
        """Connections whose UUID has not arrived, oldest first: bounded apart (`max_pending`, the oldest is
        closed to make room), so silent or slow connections can never take a call's place."""
        self.max_pending = config.max_pending or max(64, config.max_calls // 10)
        self.calls_total = 0
        self.dtmf_dropped_of_closed = 0
        self.rejected_total = 0
        self._frames_of_closed = 0
        self._server: asyncio.base_events.Server | None = None
        self._accepting = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()
        self._pending_refused = 0
        self.gc_pauses = GcPauses()
        """Garbage-collector pauses (installed by `serve`, which owns the process)."""
        self.full_collections: FullCollectionPolicy | None = None
        """Set by `serve` (which owns the process's collector): full collections after finished calls."""

    async def __aenter__(self) -> AudioSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(0)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Call(self),
            self.config.host,
            self.config.port,
            backlog=max(128, min(self.config.max_calls, 4096)),
            reuse_address=True,
            reuse_port=self.config.workers > 1 or None,  # `serve --workers N`: N processes, one port
        )
        self._accepting = True
        log.info("listening", host=self.config.host, port=self.port, max_calls=self.config.max_calls,
                 max_pending=self.max_pending,
                 loop=type(loop).__module__.split(".")[0])

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def accepting(self) -> bool:
        return self._accepting

    def hurry(self) -> None:
        """Cut a running `stop()`'s grace period short."""
        self._hurry.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let calls end by themselves for `grace_s`, then hang the rest up with 0x00."""
        grace = self.config.grace_s if grace_s is None else grace_s
        self._accepting = False
        if self._server is not None:
            self._server.close()
        log.info("stopping", calls=len(self.calls), connections=len(self.connections), grace_s=grace)
        if self.connections and grace > 0:
            idle = asyncio.ensure_future(self._idle.wait())
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait({idle, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            hurry.cancel()
        remaining = list(self.connections)
        tasks = [task for call in remaining for task in call.tasks]
        for call in remaining:
            call._end("shutdown", send_hangup=call.uuid is not None)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.clock.stop()
        log.info("stopped", hung_up=len(remaining), calls_total=self.calls_total,
                 rejected_total=self.rejected_total, clock=self.clock.stats())

    def log_stats(self, reset: bool = False) -> dict[str, object]:
        """Log (and return) the media clock's statistics; `reset` starts a new measurement window."""
        stats = {**self.clock.stats(), "gc": self.gc_pauses.summary(), "tasks": len(asyncio.all_tasks())}
        log.info("clock stats", calls=len(self.calls), clock=stats)
        if reset:
            self.clock.reset_stats()
            self.gc_pauses.reset()
        return stats

    # --- CallHost -----------------------------------------------------------------------------------

    def frames_sent_total(self) -> int:
        """Frames written to every connection since start: the closed ones' plus the open ones' (scrape time)."""
        return self._frames_of_closed + sum(call.frames_sent for call in self.connections)

    def dtmf_dropped_total(self) -> int:
        """Digits dropped by the calls' rate limits since start (scrape time, like `frames_sent_total`)."""
        return self.dtmf_dropped_of_closed + sum(call.dtmf_dropped for call in self.connections)

    def _rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.calls_rejected.labels(reason=reason).inc()

    def connection_opened(self, call: Call) -> bool:
        if not self._accepting:
            self._rejected("not-accepting")
            return False
        if len(self.calls) >= self.config.max_calls:
            self.rejected_total += 1
            self._rejected("call-limit")
            call.log.warning("call limit reached; connection closed", max_calls=self.config.max_calls)
            return False
        if len(self.pending) >= self.max_pending:
            self._evict_oldest_pending()
        self.connections.add(call)
        self.pending[call] = None
        self._idle.clear()
        return True

    def _evict_oldest_pending(self) -> None:
        """Make room for a new connection by closing the one that has waited longest for its UUID.

        Asterisk sends the UUID at once, so the oldest pending connection is the likeliest to be silent or
        hostile; refusing the new one instead would let a few silent connections lock every new call out
        until their UUID timeout. Counted in calls_rejected{reason="pending-limit"} when it closes; one
        warning per burst, not one per connection.
        """
        oldest = next(iter(self.pending))
        del self.pending[oldest]
        self.rejected_total += 1
        self._pending_refused += 1
        if self._pending_refused == 1:
            oldest.log.warning("pending_limit_reached", max_pending=self.max_pending,
                               waited_s=round(asyncio.get_running_loop().time() - oldest.connected_at, 3))
        oldest._end("pending-limit", send_hangup=False, abort=True)

    def admit_call(self, call: Call) -> bool:
        self.pending.pop(call, None)
        if not self.pending:
            self._pending_refused = 0
        if len(self.calls) >= self.config.max_calls:
            self.rejected_total += 1
            call.log.warning("call limit reached; connection closed", max_calls=self.config.max_calls)
            return False  # counted in calls_rejected{reason="call-limit"} when the connection closes
        return True

    def call_ready(self, call: Call) -> None:
        self.calls.add(call)
        self.calls_total += 1
        call.start_task(self.handler(call), name="handler")

    def call_ended(self, call: Call) -> None:
        self.calls.discard(call)

    def connection_closed(self, call: Call) -> None:
        self.calls.discard(call)
        self.pending.pop(call, None)
        if not self.pending:
            self._pending_refused = 0
        if call in self.connections:
            self._frames_of_closed += call.frames_sent
            self.dtmf_dropped_of_closed += call.dtmf_dropped
            policy = self.full_collections
            if policy is not None and call.uuid is not None:
                loop = asyncio.get_running_loop()
                if policy.call_ended(loop.time()):
                    loop.call_soon(gc.collect)  # after this callback: the connection's objects are gone
            if call.uuid is None:  # closed before it became a call: no UUID in time, a protocol error, ...
                self._rejected(call.hangup_by or "closed")
        self.connections.discard(call)
        if not self.connections:
            self._idle.set()


# --- `voice-bridge serve` -------------------------------------------------------------------------------


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop when it is installed (cheaper I/O and timers), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main)
    return uvloop.run(main)


async def serve(settings: Settings, handler: Handler | None = None, *,
                ready: Callable[[AudioSocketServer], None] | None = None, dialogue: Dialogue | None = None) -> int:
    """Serve until SIGTERM/SIGINT. Without a handler, every call plays `dialogue` (default: the configured one).

    With `METRICS_PORT` set, `/metrics`, `/healthz` and `/readyz` are served (`bridge.ops.health`) from before
    the first call until the last one has ended: `/readyz` answers 503 from the moment a stop signal
    arrives, while calls finish their grace period.
    """
    register_settings_secrets(settings)
    log.info("settings", **settings_for_log(settings))
    metrics = Metrics()
    runtime = None
    if handler is None:
        from bridge.runtime import BridgeRuntime

        runtime = BridgeRuntime(settings, dialogue=dialogue, metrics=metrics)
        await runtime.start()
        handler = runtime.handle
        log.info("dialogue", **runtime.describe())
    server = AudioSocketServer(settings.bridge, handler, metrics=metrics)
    health = None
    if settings.bridge.metrics_port:
        from bridge.ops.health import HealthServer

        health = HealthServer(server, metrics, settings, cache=runtime.cache if runtime is not None else None)
    _freeze_startup_objects()
    server.gc_pauses.install()
    server.full_collections = FullCollectionPolicy()
    try:
        await server.start()
        try:
            if health is not None:
                await health.start()
            await _until_stopped(server, settings, ready)
        finally:
            if server.accepting:  # failed before the orderly stop (e.g. the metrics port is taken)
                await server.stop(0)
            if health is not None:
                await health.stop()
    finally:
        server.gc_pauses.remove()
        if runtime is not None:
            await runtime.aclose()
    return 0


class GcPauses:
    """Times every pass of the garbage collector (`gc.callbacks`): each one stops the event loop, so its
    length is a gap every call may hear. Kept per window (the SIGUSR1 `clock stats` line: `gc`), and
    in lifetime figures `/metrics` reads at scrape time (`voicebridge_gc_pause_seconds{generation}` ...).
    The callback only adds numbers: it runs inside whatever allocation triggered the pass."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        self.lifetime_passes = [0, 0, 0]
        self.lifetime_s = [0.0, 0.0, 0.0]
        self.lifetime_max_s = [0.0, 0.0, 0.0]
        self.reset()

    def reset(self) -> None:
        self.passes = [0, 0, 0]
        self.max_s = [0.0, 0.0, 0.0]
        self.total_s = 0.0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        self.record(info["generation"], self._clock() - self._started)

    def record(self, generation: int, pause_s: float) -> None:
        self.passes[generation] += 1
        self.total_s += pause_s
        self.max_s[generation] = max(self.max_s[generation], pause_s)
        self.lifetime_passes[generation] += 1
        self.lifetime_s[generation] += pause_s
        self.lifetime_max_s[generation] = max(self.lifetime_max_s[generation], pause_s)

    def summary(self) -> dict[str, float]:
        """Flat figures (a multi-worker bench takes the worst worker's of each): passes and max ms by generation."""
        out: dict[str, float] = {"total_ms": round(self.total_s * 1000, 2)}
        for generation in range(3):
            out[f"gen{generation}_passes"] = self.passes[generation]
            out[f"gen{generation}_max_ms"] = round(self.max_s[generation] * 1000, 2)
        return out


FULL_GC_AFTER_CALLS = 200
"""Finished calls after which `serve` runs a full collection (see `FullCollectionPolicy`)."""
FULL_GC_MIN_INTERVAL_S = 10.0
"""At most one scheduled full collection this often, however fast calls end."""


class FullCollectionPolicy:
    """When to run a full garbage collection: after `after_calls` finished calls, at most every `min_interval_s`.

    Why: a finished call leaves cyclic garbage (tasks, coroutines, frames and tracebacks of a dialogue
    cut short) that lived long enough to reach the oldest generation; with startup objects frozen and the
    third threshold raised (`_freeze_startup_objects`) a full pass is rare, so that garbage piled up (RSS
    56 -> 90 MB over 5,000 calls, issue 12). A full pass walks only what was allocated after the freeze,
    i.e. the live calls, so its pause is short and measured (`GcPauses`, generation 2); running it on
    finished calls keeps RSS flat. Sans I/O: `now` is given.
    """

    def __init__(self, after_calls: int = FULL_GC_AFTER_CALLS, min_interval_s: float = FULL_GC_MIN_INTERVAL_S) -> None:
        if after_calls < 1 or min_interval_s < 0:
            raise ValueError(f"FullCollectionPolicy needs after_calls >= 1 and min_interval_s >= 0, got "
                             f"{after_calls}, {min_interval_s}")
        self.after_calls = after_calls
        self.min_interval_s = min_interval_s
        self._ended = 0
        self._last: float | None = None

    def call_ended(self, now: float) -> bool:
        """A call finished at `now`: True when a full collection is due now (the count starts over)."""
        self._ended += 1
        if self._ended < self.after_calls:
            return False
        if self._last is not None and now - self._last < self.min_interval_s:
            return False
        self._ended = 0
        self._last = now
        return True


def _freeze_startup_objects() -> None:
    """Keep the garbage collector's full passes away from the calls' audio.

    A full pass walks every tracked object with the event loop stopped. What start-up built (modules,
    settings, the dialogue, clients: most of the heap, alive for good) is frozen out of those passes
    (`gc.freeze`), and a full pass is considered a hundred times less often (the third threshold: after
    1000 middle-generation passes instead of 10; young cyclic garbage is still collected as before). Left as they
    were, passes of 20-50 ms came every time the heap grew by a quarter, i.e. several times while a
    thousand calls start, and each one is a gap every call hears (measured in README, "Benchmarks").
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)


async def _until_stopped(server: AudioSocketServer, settings: Settings,
                         ready: Callable[[AudioSocketServer], None] | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal_at = 0.0
    # a worker (`serve --workers N`) may get one stop request twice: from its supervisor and from systemd
    # or a terminal, which signal the whole group; a copy within DUPLICATE_SIGNAL_S is not a second request
    duplicate_s = DUPLICATE_SIGNAL_S if settings.bridge.workers > 1 else 0.0

    def on_stop_signal(name: str) -> None:
        nonlocal first_signal_at
        if stop.is_set():
            if loop.time() - first_signal_at < duplicate_s:
                return
            log.info("second signal: hanging up every call now", signal=name)
            server.hurry()
        else:
            log.info("signal received: shutting down", signal=name)
            first_signal_at = loop.time()
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, server.log_stats, True)
    if ready is not None:
        ready(server)
    await stop.wait()
    await server.stop(settings.bridge.grace_s)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("--workers", dest="workers", metavar="N", default=None,
                        help="same as --bridge-workers: N processes share the port (SO_REUSEPORT), one core each")
    line_test = parser.add_mutually_exclusive_group()
    line_test.add_argument("--tone", type=float, metavar="HZ", default=None,
                           help="play a test tone of HZ (a multiple of 50, e.g. 400) instead of the dialogue")
    line_test.add_argument("--silence", action="store_true",
                           help="play only silence instead of the dialogue (pacing checks, benchmarks)")


def run(args: argparse.Namespace) -> int:
    from bridge.dialogue import DialogueError
    from bridge.config import require_llm_settings
    from bridge.runtime import load_configured_dialogue

    settings = settings_from_args(args)
    configure_logging(settings.bridge.log_level, settings.bridge.log_format)
    handler = line_test_handler(tone_hz=args.tone, silence=args.silence)
    dialogue = None
    if handler is None:
        try:  # refuse a bad file before listening; the runtime is given the loaded model
            dialogue = load_configured_dialogue(settings)
        except DialogueError as exc:
            print(f"voice-bridge serve: invalid dialogue:\n{exc}", file=sys.stderr)
            return 2
        require_llm_settings(dialogue, settings.llm)  # llm items need LLM_BASE_URL: ConfigError, exit 2
    try:
        if settings.bridge.workers > 1:
            from bridge.ops.workers import Supervisor

            return Supervisor(settings, settings.bridge.workers,
                              lambda worker: run_event_loop(serve(worker, handler, dialogue=dialogue))).run()
        return run_event_loop(serve(settings, handler, dialogue=dialogue))
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot serve", error=str(exc), host=settings.bridge.host, port=settings.bridge.port)
        print(f"voice-bridge serve: {exc}", file=sys.stderr)
        return 1
