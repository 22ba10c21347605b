"""The AudioSocket server: accept loop, call registry and cap, graceful shutdown, and `voice-bridge serve`'s CLI.

Asterisk connects one TCP socket per call. Each connection is a `bridge.call.Call` (an asyncio Protocol);
once its UUID has arrived the call joins the shared media clock (silence from the next tick) and the
handler runs as the first task of the call's task group (`Call.run`). When the handler returns the call
keeps playing silence until one side hangs up. The handler is injected (`AudioSocketServer(config,
handler)`); `voice-bridge serve` plays the dialogue (`bridge.app.BridgeApp.handle`, wired by the
composition root `bridge.app.serve`), or a test tone or silence.

Overload admission: when the media clock stops keeping its schedule (`bridge.overload.OverloadDetector`
on each wake-up's lateness), the server stops listening until the clock has been calm for a while. A
connect to a port nobody listens on is refused by the kernel (RST), which Asterisk's channel driver
reports as DIALSTATUS=CHANUNAVAIL, so the dialplan can try another bridge; with `--workers N`
(SO_REUSEPORT) the kernel sends new connections to the workers still listening. A connection accepted an
instant before the pause is closed before its call starts (`calls_rejected_total{reason="overload"}`).
The calls already up keep the whole core, hence exact pacing.

Signals (`voice-bridge serve`): SIGTERM/SIGINT stop accepting and give calls `BRIDGE_SHUTDOWN_GRACE`
seconds to end, then hang them up with 0x00 (a second signal hangs them up at once); SIGUSR1 logs the media
clock's statistics (`clock_stats`: tick lateness and tick work p50/p99/max) and starts them afresh, which is
how `voice-bridge bench` measures a steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bridge.call import Call, CallHost
from bridge.clock import MediaClock
from bridge.config import BridgeConfig, Settings, add_settings_flags, settings_from_args
from bridge.ops.gc import FullCollectionPolicy, GcPauses
from bridge.ops.listen import ListenError, bridge_address
from bridge.ops.metrics import Metrics
from bridge.ops.workers import DUPLICATE_SIGNAL_S
from bridge.outlet import NATIVE
from bridge.overload import OverloadDetector, OverloadRule
from bridge.protocol import FRAME_BYTES, SAMPLE_RATE
from voice.config import describe_default, help_with_default
from voice.tasks import cancel_and_wait

__all__ = [
    "AudioSocketServer", "Handler", "silence_handler", "tone_handler", "tone_frame", "tone_frames",
    "parse_tone_hz", "line_test_handler",
    "run_event_loop", "serve_until_signalled", "configure_parser", "run",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

Handler = Callable[[Call], Awaitable[None]]


# --- handlers -------------------------------------------------------------------------------------------


async def silence_handler(call: Call) -> None:
    """Say nothing: the media clock keeps the line alive with silence until someone hangs up."""
    return None


TONE_MAX_CYCLE_FRAMES = 250
"""A test tone repeats after at most this many frames (5 s): any frequency that is a multiple of 0.2 Hz."""
TONE_RUN_FRAMES = 250
"""Frames of tone the handler queues at once (5 s)."""
_FRAMES_PER_S = SAMPLE_RATE * 2 // FRAME_BYTES


def tone_frames(frequency_hz: float, amplitude: int = 8000) -> list[bytes]:
    """One cycle of 20 ms slin frames of a sine tone that repeats seamlessly: the sine runs on across the
    frames (its phase is kept), and the cycle ends where it comes back to phase 0 on a frame boundary.

    400 Hz fits a 20 ms frame (one frame); 410 Hz needs five (41 periods in 100 ms): repeating one frame of
    it would restart the sine every 20 ms, a click at 50 Hz. ValueError for a frequency that is not between
    0 and the 4000 Hz Nyquist limit, or that would not repeat within TONE_MAX_CYCLE_FRAMES frames."""
    frames = tone_cycle_frames(frequency_hz)
    step = 2 * math.pi * frequency_hz / SAMPLE_RATE
    samples = frames * FRAME_BYTES // 2
    pcm = b"".join(round(amplitude * math.sin(step * i)).to_bytes(2, "little", signed=True)
                   for i in range(samples))
    return [pcm[k:k + FRAME_BYTES] for k in range(0, len(pcm), FRAME_BYTES)]


def tone_cycle_frames(frequency_hz: float) -> int:
    """How many frames one seamless cycle of the tone takes; ValueError (saying why) when it cannot be played."""
    if not math.isfinite(frequency_hz) or not 0 < frequency_hz < SAMPLE_RATE / 2:
        raise ValueError(f"a tone must be above 0 and below {SAMPLE_RATE // 2} Hz, got {frequency_hz:g}")
    frames = (Fraction(repr(float(frequency_hz))) / _FRAMES_PER_S).denominator  # periods per frame, reduced
    if frames > TONE_MAX_CYCLE_FRAMES:
        raise ValueError(f"a {frequency_hz:g} Hz tone does not repeat within "
                         f"{TONE_MAX_CYCLE_FRAMES // _FRAMES_PER_S} s; give a multiple of "
                         f"{_FRAMES_PER_S / TONE_MAX_CYCLE_FRAMES:g} Hz, e.g. {round(frequency_hz)}")
    return frames


def tone_frame(frequency_hz: float, amplitude: int = 8000) -> bytes:
    """The first 20 ms frame of `tone_frames`: the whole tone when the frequency is a multiple of 50 Hz."""
    return tone_frames(frequency_hz, amplitude)[0]


def tone_handler(frequency_hz: float = 400.0) -> Handler:
    """A handler that plays a continuous test tone (its cycle of frames is computed once).

    The cycle, repeated to about five seconds, is queued as one list: a run the clock reads straight from
    the shared list, as it reads a cached fragment, so the handler wakes once per run rather than every
    couple of frames.
    """
    cycle = tone_frames(frequency_hz)
    frames = cycle * max(1, -(-TONE_RUN_FRAMES // len(cycle)))

    async def play_tone(call: Call) -> None:
        while True:
            await call.play_frames(frames)

    return play_tone


def parse_tone_hz(raw: str) -> float:
    """`serve --tone HZ`: a frequency `tone_frames` can play (argparse names the option in the error)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frequency in Hz, got {raw!r}") from None
    try:
        tone_cycle_frames(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


OVERLOAD_POLL_S = 0.1
"""While admission is paused, how often the overload rule is asked whether it may resume (it also resumes
from the clock's own wake-ups; the timer matters when no call is left on the clock)."""


BUSY_HYSTERESIS = 0.1
"""Admission paused for the loop's CPU resumes once the share is this much below BRIDGE_OVERLOAD_BUSY."""
CPU_LIMIT_EVERY_S = 10.0
"""How often the process's CPU quota is read again (a container's limit, a benchmark's cgroup)."""
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_limit(cgroups: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> float:
    """The share of one core this process may use: its cgroup's CPU quota (v2 `cpu.max`, v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`), at most 1 (the event loop is one thread). A container limited
    to half a core is full at 0.5; BRIDGE_OVERLOAD_BUSY is a share of this. 1.0 when there is no quota or it
    cannot be read."""
    try:
        lines = cgroups.read_text().splitlines()
    except OSError:
        return 1.0
    for line in lines:
        _, controllers, path = line.split(":", 2)
        try:
            if controllers == "":  # v2
                quota, period = (root / path.lstrip("/") / "cpu.max").read_text().split()
                if quota != "max":
                    return min(1.0, int(quota) / int(period))
            elif "cpu" in controllers.split(","):
                base = root / controllers / path.lstrip("/")
                if not base.exists():
                    base = root / "cpu" / path.lstrip("/")
                quota_us = int((base / "cpu.cfs_quota_us").read_text())
                if quota_us > 0:
                    return min(1.0, quota_us / int((base / "cpu.cfs_period_us").read_text()))
        except (OSError, ValueError):
            continue
    return 1.0


def overload_rule(config: BridgeConfig) -> OverloadRule | None:
    """The overload rule of the settings, or None when BRIDGE_OVERLOAD_LATE_MS is 0 (admission control off)."""
    if not config.overload_late_ms:
        return None
    busy = config.overload_busy
    return OverloadRule(late_s=config.overload_late_ms / 1000, min_calls=config.overload_min_calls,
                        calm_s=config.overload_calm_s, busy_enter=busy, busy_exit=max(0.0, busy - BUSY_HYSTERESIS))


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
        overload: OverloadDetector | None = None,
    ) -> None:
        self.config = config
        self.handler: Handler = handler or silence_handler
        self.clock = clock or MediaClock()
        self.metrics = metrics
        """When given: counts refused connections and reads this server's live figures (`Metrics.watch`)."""
        if metrics is not None:
            metrics.watch(self)
        self.calls: set[Call] = set()
        self._trees: set[asyncio.Task[None]] = set()
        """The task trees of calls still running, their connection closed or not: a call that has hung up
        may still be cleaning up (closing its TTS WebSocket, its last log line), and `stop` waits for that."""
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
        self._port: int | None = None
        self._accepting = False
        rule = overload_rule(config)
        self.overload: OverloadDetector | None = overload or (OverloadDetector(rule) if rule is not None else None)
        """The overload rule fed by the clock's wake-ups (None: admission is never paused for lateness)."""
        self._paused = False
        """Not listening because of overload (the listening socket is closed; `_server` is None)."""
        self._overload_timer: asyncio.TimerHandle | None = None
        self._cpu_sample_at = 0.0
        self._cpu_limit = 1.0
        self._cpu_limit_at = 0.0
        self._relisten: asyncio.Task[None] | None = None
        if self.overload is not None:
            self.clock.on_wake = self._clock_woke
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

    async def bind(self) -> None:
        """Bind the AudioSocket port without taking connections yet (a connect is refused until `start`).

        `serve` binds every port first and starts none until all are bound: a failure leaves no half-started
        bridge behind. Raises `ListenError` naming BRIDGE_HOST and BRIDGE_PORT.
        """
        if self._server is not None:
            return
        try:
            self._server = await self._listen(self.config.port, start_serving=False)
        except OSError as exc:
            raise ListenError(bridge_address(self.config), self.config.port, exc) from None
        self._port = self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Take calls (binding first when `bind` was not called); logs `listening`."""
        await self.bind()
        assert self._server is not None
        try:
            await self._server.start_serving()  # listen(2): a second program may have bound the port meanwhile
        except OSError as exc:
            self.unbind()
            raise ListenError(bridge_address(self.config), self.config.port, exc) from None
        self._accepting = True
        loop = asyncio.get_running_loop()
        log.info("listening", host=self.config.host, port=self.port, max_calls=self.config.max_calls,
                 max_pending=self.max_pending, loop=type(loop).__module__.split(".")[0],
                 tick="native" if NATIVE and self.config.native_tick else "python")

    async def _listen(self, port: int, *, start_serving: bool = True) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: Call(self),
            self.config.host,
            port,
            backlog=max(128, min(self.config.max_calls, 4096)),
            reuse_address=True,
            reuse_port=self.config.workers > 1 or None,  # `serve --workers N`: N processes, one port
            start_serving=start_serving,
        )

    def unbind(self) -> None:
        """Close the port of a server that never started (start-up failed after `bind`)."""
        if self._server is not None and not self._accepting:
            self._server.close()
            self._server = None

    @property
    def port(self) -> int:
        """The port listened on (kept while admission is paused for overload)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def accepting(self) -> bool:
        """Not stopping (a stop signal ends this for good); see `overloaded` for the pause."""
        return self._accepting

    @property
    def overloaded(self) -> bool:
        """Admission is paused because the media clock cannot keep its schedule (not listening now)."""
        return self._paused

    # --- overload admission -------------------------------------------------------------------------

    def _clock_woke(self, now: float, late: float) -> None:
        """The media clock's observer: one sample per wake-up for the overload rule, with the loop thread's
        CPU time once per bucket of its window (reading it is a system call: not 500 times a second)."""
        overload = self.overload
        if overload is None:
            return
        cpu = None
        if now >= self._cpu_sample_at:
            if now >= self._cpu_limit_at:
                self._cpu_limit, self._cpu_limit_at = cpu_limit(), now + CPU_LIMIT_EVERY_S
            cpu = time.thread_time() / self._cpu_limit  # the loop's CPU as a share of what it may use
            self._cpu_sample_at = now + overload.rule.bucket_s
        if overload.observe(now, late, len(self.clock), cpu):
            self._overload_changed(now)

    def _poll_overload(self) -> None:
        self._overload_timer = None
        if self.overload is not None and self._paused:
            now = time.monotonic()
            if not self.overload.overloaded(now):
                self._overload_changed(now)
            else:
                self._overload_timer = asyncio.get_running_loop().call_later(OVERLOAD_POLL_S, self._poll_overload)

    def _overload_changed(self, now: float) -> None:
        assert self.overload is not None
        total, late = self.overload.window(now)
        if self.overload.is_overloaded and not self._paused:
            self._paused = True
            busy = self.overload.busy(now)
            log.warning("admission_paused", reason="overload", calls=len(self.calls), wakeups=total,
                        late_wakeups=late, late_ms=round(self.overload.rule.late_s * 1000, 1),
                        loop_busy=None if busy is None else round(busy, 3))
            if self._server is not None:
                self._server.close()  # the kernel now refuses new connections (RST): CHANUNAVAIL in Asterisk
                self._server = None
            if self._overload_timer is None:
                self._overload_timer = asyncio.get_running_loop().call_later(OVERLOAD_POLL_S, self._poll_overload)
        elif not self.overload.is_overloaded and self._paused:
            self._paused = False
            if self._overload_timer is not None:
                self._overload_timer.cancel()
                self._overload_timer = None
            if self._accepting and self._relisten is None:
                self._relisten = asyncio.get_running_loop().create_task(self._resume_listening(), name="relisten")

    async def _resume_listening(self) -> None:
        try:
            server = await self._listen(self.port)
        except OSError as exc:  # the port was taken meanwhile: stay paused and try again
            log.error("admission_resume_failed", error=str(exc), port=self.port)
            self._paused = True
            if self.overload is not None:
                self.overload.since = time.monotonic()
            self._overload_timer = asyncio.get_running_loop().call_later(1.0, self._retry_listen)
            return
        finally:
            self._relisten = None
        if not self._accepting or self._paused:  # stopped, or overloaded again, meanwhile
            server.close()
            return
        self._server = server
        log.info("admission_resumed", calls=len(self.calls), port=self.port)

    def _retry_listen(self) -> None:
        self._overload_timer = None
        if self._paused and self._accepting and self._relisten is None:
            self._paused = False
            self._relisten = asyncio.get_running_loop().create_task(self._resume_listening(), name="relisten")

    def hurry(self) -> None:
        """Cut a running `stop()`'s grace period short."""
        self._hurry.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let calls end by themselves for `grace_s`, then hang the rest up with 0x00."""
        grace = self.config.grace_s if grace_s is None else grace_s
        self._accepting = False
        if self._server is not None:
            self._server.close()
        if self._overload_timer is not None:
            self._overload_timer.cancel()
            self._overload_timer = None
        await cancel_and_wait(self._relisten)
        log.info("stopping", calls=len(self.calls), connections=len(self.connections), grace_s=grace)
        if self.connections and grace > 0:
            idle = asyncio.ensure_future(self._idle.wait())
            hurry = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait({idle, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(idle, hurry)
        remaining = list(self.connections)
        tasks = {task for call in remaining for task in call.tasks} | self._trees
        for call in remaining:
            call._end("shutdown", send_hangup=call.uuid is not None)
        if tasks:  # the calls just hung up, and those that ended before but are still cleaning up
            await asyncio.wait(tasks, timeout=5)
        await self.clock.stop()
        log.info("stopped", hung_up=len(remaining), calls_total=self.calls_total,
                 rejected_total=self.rejected_total, clock={**self.clock.stats(), "gc": self.gc_pauses.summary()})

    def log_stats(self, reset: bool = False) -> dict[str, object]:
        """Log (and return) the media clock's statistics; `reset` starts a new measurement window."""
        stats = {**self.clock.stats(), "gc": self.gc_pauses.summary(), "tasks": len(asyncio.all_tasks())}
        log.info("clock_stats", calls=len(self.calls), clock=stats)
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
        if self._paused:  # accepted in the instant the pause began: closed before the call starts
            self.rejected_total += 1
            self._rejected("overload")
            return False
        if len(self.calls) >= self.config.max_calls:
            self.rejected_total += 1
            self._rejected("call-limit")
            call.log.warning("call_rejected", reason="call-limit", max_calls=self.config.max_calls)
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
        tree = call.run(self.handler)
        self._trees.add(tree)
        tree.add_done_callback(self._trees.discard)

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
                if policy.call_ended(loop.time(), len(self.calls)):
                    loop.call_soon(gc.collect)  # after this callback: the connection's objects are gone
            if call.uuid is None:  # closed before it became a call: no UUID in time, a protocol error, ...
                self._rejected(call.hangup_by or "closed")
        self.connections.discard(call)
        if not self.connections:
            self._idle.set()


# --- `voice-bridge serve` -------------------------------------------------------------------------------


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (cheaper I/O and timers), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main)
    return uvloop.run(main)


_PROCESS_EXITS_AFTER_SERVE = False
"""Set by `run` (the `serve` command): the process ends when serving ends."""


async def serve_until_signalled(server: AudioSocketServer, config: BridgeConfig,
                                ready: Callable[[AudioSocketServer], None] | None = None) -> None:
    """Graceful shutdown: wait for SIGTERM/SIGINT, then `server.stop(grace)`; a second signal hurries it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal_at = 0.0
    # a worker (`serve --workers N`) may get one stop request twice: from its supervisor and from systemd
    # or a terminal, which signal the whole group; a copy within DUPLICATE_SIGNAL_S is not a second request
    duplicate_s = DUPLICATE_SIGNAL_S if config.workers > 1 else 0.0

    def on_stop_signal(name: str) -> None:
        nonlocal first_signal_at
        if stop.is_set():
            if loop.time() - first_signal_at < duplicate_s:
                return
            log.info("second_stop_signal", signal=name)
            server.hurry()
        else:
            log.info("stop_signal", signal=name)
            first_signal_at = loop.time()
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, server.log_stats, True)
    if ready is not None:
        ready(server)
    await stop.wait()
    await server.stop(config.grace_s)
    if _PROCESS_EXITS_AFTER_SERVE:
        # Stopped: a further SIGTERM/SIGINT (systemd or a terminal repeating the request) must not kill the
        # process with the default action once the loop has let go of its handlers; it stays pending until
        # exit. Only in `voice-bridge serve`'s own process: a mask blocked in a host program (a test
        # serving in-process) would be inherited by every process it starts afterwards.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser)
    parser.add_argument("--workers", dest="workers", metavar="N", default=None,
                        help=help_with_default("same as --bridge-workers: N processes share the port (SO_REUSEPORT), "
                                               "one core each", describe_default(BridgeConfig.model_fields["workers"]),
                                               env="BRIDGE_WORKERS"))
    line_test = parser.add_mutually_exclusive_group()
    line_test.add_argument("--tone", type=parse_tone_hz, metavar="HZ", default=None,
                           help="play a test tone of HZ instead of the dialogue, e.g. 400 (below 4000, a multiple "
                                "of 0.2; the phase runs on across frames)")
    line_test.add_argument("--silence", action="store_true",
                           help="play only silence instead of the dialogue (pacing checks, benchmarks)")


def run(args: argparse.Namespace) -> int:
    global _PROCESS_EXITS_AFTER_SERVE
    _PROCESS_EXITS_AFTER_SERVE = True
    from bridge.app import load_configured_dialogue, serve
    from bridge.config import require_llm_settings
    from bridge.dialogue import DialogueError

    settings = settings_from_args(args)  # logging is configured already, by the CLI (with the same flags)
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

            def work(worker: Settings, metrics_sockets: list[socket.socket]) -> int:
                try:
                    return run_event_loop(serve(worker, handler, dialogue=dialogue, metrics_sockets=metrics_sockets))
                except ListenError as exc:  # status 2: the supervisor stops instead of restarting the worker
                    return _cannot_listen(exc)

            return Supervisor(settings, settings.bridge.workers, work).run()
        return run_event_loop(serve(settings, handler, dialogue=dialogue))
    except ListenError as exc:
        return _cannot_listen(exc)
    except OSError as exc:
        log.error("serve_failed", error=str(exc), host=settings.bridge.host, port=settings.bridge.port)
        print(f"voice-bridge serve: {exc}", file=sys.stderr)
        return 1


def _cannot_listen(exc: ListenError) -> int:
    """A port that cannot be had is a configuration error: one line naming the settings, exit status 2."""
    log.error("cannot_listen", **exc.log_fields())
    print(f"voice-bridge serve: {exc}", file=sys.stderr)
    return 2
