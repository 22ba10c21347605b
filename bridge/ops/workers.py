"""`voice-bridge serve --workers N`: N bridge processes on one port (SO_REUSEPORT), under a small supervisor.

One Python process runs one event loop on one core. To use more cores, N workers each open their own
listening socket on the same address with SO_REUSEPORT, and the kernel spreads new connections over them
(by a hash of the connection's addresses), so every call lives its whole life in one worker. Each worker is
a complete bridge: its own event loop, media clock, Redis pool, TTS client, fragment memo and metrics
(`METRICS_PORT` + worker index). Workers share nothing but Redis, exactly as bridges on separate machines do.

The parent only supervises: it reserves the port (so `--bridge-port 0` gives every worker the same one),
forks the workers (before any event loop exists), passes SIGTERM/SIGINT/SIGUSR1 on to them, restarts a
worker that dies, and exits when they have all stopped. A worker stops gracefully on SIGTERM like a single
bridge (calls get `BRIDGE_SHUTDOWN_GRACE` seconds); a second stop signal at least a second later hangs up
at once (a copy arriving within that second, e.g. from both the supervisor and systemd's cgroup-wide
SIGTERM or a terminal's Ctrl-C, is the same request). Workers die with the supervisor (PR_SET_PDEATHSIG).

More machines: run one bridge (with or without workers) per machine and let Asterisk choose, e.g. a dialplan
that tries `AudioSocket(${UUID},bridge-a:9092)` and falls back to bridge-b, or a TCP load balancer in
front of the AudioSocket port. The bridges share only Redis (a Redis Cluster with
`REDIS_URL=redis+cluster://...` when one server is not enough); call variables at `call:<uuid>` are read
by whichever bridge takes the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import structlog

from bridge.config import Settings
from bridge.ops.listen import ListenError, bridge_address, listen_sockets, metrics_address
from bridge.ops.logs import configure_logging

__all__ = ["Supervisor", "reserve_port", "LineAtATime", "DUPLICATE_SIGNAL_S"]

log = structlog.get_logger(__name__)

DUPLICATE_SIGNAL_S = 1.0
"""A worker takes a second stop signal within this long of the first as the same request (not a hurry)."""
RESTART_DELAY_S = (0.5, 30.0)
"""A worker that died is restarted after the first delay, doubled after each quick death, up to the second."""
QUICK_DEATH_S = 5.0
GIVE_UP_AFTER = 5
"""Workers dying within QUICK_DEATH_S of their start this many times in a row: the supervisor gives up."""
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD}


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket: fixes the port (a free one for port 0) for the workers.

    It takes no connections (only listening sockets do); it keeps the port while workers restart, and
    refuses to start when another program already holds the port without SO_REUSEPORT (OSError).
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class LineAtATime:
    """A worker's stderr for logs: each line leaves in one write(2), so the lines of several workers sharing
    one pipe or journal stream never interleave (the kernel keeps a pipe write of up to 4 KiB whole; print()
    writes a line and its newline separately, which two processes can splice into one broken line)."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        self._pending.append(text)
        if text.endswith("\n"):
            data = "".join(self._pending).encode("utf-8", "replace")
            self._pending.clear()
            while data:
                try:
                    data = data[os.write(self.fd, data):]
                except BlockingIOError:  # pragma: no cover - stderr is blocking unless someone changed it
                    time.sleep(0.001)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return os.isatty(self.fd)


def _die_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclasses.dataclass
class _Worker:
    index: int
    pid: int
    started: float


class Supervisor:
    """Starts `count` workers running `work(settings, metrics_sockets)` (in forked processes) and looks after
    them. Every port is bound before the first worker starts: the AudioSocket port (reserved) and, with
    METRICS_PORT set, each worker's metrics port, held here and inherited by the worker (a restarted worker
    finds its port waiting). A port that cannot be had raises `ListenError` naming its settings."""

    def __init__(self, settings: Settings, count: int,
                 work: Callable[[Settings, list[socket.socket]], int]) -> None:
        if count < 2:
            raise ValueError(f"a supervisor is for 2 workers or more, got {count}")
        self.settings = settings
        self.count = count
        self.work = work
        self.workers: dict[int, _Worker] = {}
        """pid -> worker"""
        self.stopping = False
        self.exit_code = 0
        self._quick_deaths = 0
        self._restart_at: dict[int, float] = {}
        """worker index -> when to start it again"""
        self._mask: set[int | signal.Signals] = set()
        self.metrics_sockets: dict[int, list[socket.socket]] = {}
        """worker index -> its metrics port's listening sockets (empty without METRICS_PORT)"""

    def worker_settings(self, index: int, port: int) -> Settings:
        """Worker `index`'s settings: the reserved port; its own metrics port (METRICS_PORT + index)."""
        bridge = self.settings.bridge
        metrics_port = bridge.metrics_port + index if bridge.metrics_port else 0
        return self.settings.model_copy(
            update={"bridge": bridge.model_copy(update={"port": port, "metrics_port": metrics_port})})

    def run(self) -> int:
        bridge = self.settings.bridge
        try:
            reserved = reserve_port(bridge.host, bridge.port)
        except OSError as exc:
            raise ListenError(bridge_address(bridge), bridge.port, exc) from None
        self.port = reserved.getsockname()[1]
        try:
            self._bind_metrics()
        except BaseException:
            reserved.close()
            raise
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(self.count):
                self._spawn(index)
            log.info("workers_started", workers=self.count, port=self.port,
                     pids=sorted(w.pid for w in self.workers.values()))
            while self.workers or (self._restart_at and not self.stopping):
                timeout = 1.0
                if self._restart_at and not self.stopping:
                    timeout = max(0.01, min(self._restart_at.values()) - time.monotonic())
                info = signal.sigtimedwait(_SIGNALS, min(timeout, 1.0))
                if info is not None and info.si_signo != signal.SIGCHLD:
                    self._on_signal(signal.Signals(info.si_signo))
                self._reap()
                self._restart_due()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            raise
        finally:
            reserved.close()
            self._close_metrics()
        # The signals stay blocked until this process exits: a stop signal that arrives while it winds down
        # (systemd and terminals signal every process; an operator may repeat it) is the request already
        # carried out, and must not kill the supervisor with the default action and a -15 exit status.
        log.info("workers_stopped", exit_code=self.exit_code)
        return self.exit_code

    # --- the workers ---------------------------------------------------------------------------------

    def _bind_metrics(self) -> None:
        """Each worker's metrics port (METRICS_PORT + index), bound here before any worker starts."""
        bridge = self.settings.bridge
        if not bridge.metrics_port:
            return
        host = bridge.metrics_host or bridge.host
        try:
            for index in range(self.count):
                self.metrics_sockets[index] = listen_sockets(host, bridge.metrics_port + index,
                                                             metrics_address(bridge, index))
        except BaseException:
            self._close_metrics()
            raise

    def _close_metrics(self, keep: int | None = None) -> None:
        """Close the metrics sockets (a worker: all but its own, `keep`)."""
        for index, sockets in list(self.metrics_sockets.items()):
            if index != keep:
                for sock in sockets:
                    sock.close()
                del self.metrics_sockets[index]

    def _spawn(self, index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
                _die_with_parent()
                # The parent's logging writes through a buffered stderr: re-pointed at a line-atomic stream,
                # the workers' lines never interleave mid-line on the shared stderr.
                configure_logging(self.settings.bridge.log_level, self.settings.bridge.log_format, LineAtATime())
                structlog.contextvars.bind_contextvars(worker=index, pid=os.getpid())
                self._close_metrics(keep=index)
                code = self.work(self.worker_settings(index, self.port), self.metrics_sockets.get(index, []))
            except KeyboardInterrupt:
                code = 130
            except BaseException as exc:
                log.error("worker_failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = _Worker(index, pid, time.monotonic())

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker_stopped", worker=worker.index, pid=pid, exit_code=code)
                if code not in (0, -signal.SIGTERM):
                    self.exit_code = self.exit_code or 1
                continue
            self._died(worker, code)

    def _died(self, worker: _Worker, code: int) -> None:
        lived = time.monotonic() - worker.started
        if code == 2:  # a configuration error: every restart would fail the same way
            log.error("worker_config_refused", worker=worker.index, pid=worker.pid)
            self.exit_code = 2
            self._stop(signal.SIGTERM)
            return
        self._quick_deaths = self._quick_deaths + 1 if lived < QUICK_DEATH_S else 0
        if self._quick_deaths >= GIVE_UP_AFTER:
            log.error("workers_keep_dying", worker=worker.index, exit_code=code,
                      deaths=self._quick_deaths)
            self.exit_code = 1
            self._stop(signal.SIGTERM)
            return
        delay = min(RESTART_DELAY_S[0] * 2 ** max(0, self._quick_deaths - 1), RESTART_DELAY_S[1])
        log.warning("worker_died", worker=worker.index, pid=worker.pid, exit_code=code,
                    lived_s=round(lived, 1), restart_in_s=delay)
        self._restart_at[worker.index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self.stopping:
            self._restart_at.clear()
            return
        now = time.monotonic()
        for index, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[index]
                self._spawn(index)
                log.info("worker_restarted", worker=index, pid=max(self.workers))

    # --- signals -------------------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGUSR1:
            self._send(signal.SIGUSR1)
            return
        if not self.stopping:
            log.info("stop_signal", signal=sig.name)
        else:
            log.info("second_stop_signal", signal=sig.name)
        self._stop(sig)

    def _stop(self, sig: signal.Signals) -> None:
        self.stopping = True
        self._restart_at.clear()
        self._send(signal.SIGTERM)

    def _send(self, sig: signal.Signals) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
