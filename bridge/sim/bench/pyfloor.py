"""Python floors: the least a Python AudioSocket server can do per call, one design choice at a time.

The C floor (bridge.sim.bench.floor) measures the kernel's TCP path; the bridge adds Python to it. These
servers sit between the two: each does only what pacing needs (accept, read the UUID, one tone frame per
call per 20 ms on an absolute 2 ms-phase schedule, read and drop what the caller sends), in Python on the
same event loop as the bridge (uvloop when installed), with one choice varied at a time, so that the
benchmark's CPU per call-second of each variant prices that choice:

- `--read callback`: a Protocol per call; the loop calls `data_received` for every inbound message (the
  bridge's way), which drops it. `--read decode`: the same, and it decodes each message with the bridge's
  `Decoder` and walks the messages as the call's hot path does. `--read tick`: the sockets are not
  watched for reading at all; each phase's tick reads its calls' sockets (one non-blocking `recv` each,
  everything that arrived in 20 ms at once) right after writing their frames. `--read lowat`: callbacks,
  but with SO_RCVLOWAT set to five messages, so the loop wakes for a call's inbound audio every 100 ms
  (five messages a read) instead of every 20 ms; end of file still wakes it at once.
- `--write transport`: `transport.write(frame)` (the bridge's way). `--write socket`: `socket.send(frame)`
  on the call's socket directly, skipping the transport's buffer bookkeeping.

    python -m bridge.sim.bench.pyfloor --port 0 [--read callback|decode|tick] [--write transport|socket]

Logs (JSON on stderr) are the ones the benchmark reads: `listening` with the port, `clock stats` on
SIGUSR1 (lateness of the phase ticks), `stopped` on SIGTERM. Nothing imports it but the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from typing import Protocol

import structlog

from bridge.clock import Histogram
from bridge.ops.logs import configure_logging
from bridge.protocol import AUDIO_HEADER_320, Decoder, Kind, ProtocolError
from bridge.server import run_event_loop, tone_frame

log = structlog.get_logger(__name__)

PHASES = 10
PHASE_S = 0.002
READS = ("callback", "decode", "tick", "lowat")
LOWAT_MESSAGES = 5
"""`--read lowat`: the kernel reports a call's socket readable once this many 20 ms messages are waiting."""
WRITES = ("transport", "socket")


class _Sink(Protocol):
    def send(self, data: bytes) -> object: ...


class FloorCall(asyncio.Protocol):
    """One call: the UUID first, then it is the clock's to write to (and, with `--read tick`, to read)."""

    def __init__(self, server: PyFloor) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.sink: _Sink | None = None
        self.decoder = Decoder(expect_uuid=True)
        self.started = False
        self.phase = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.started:
            self._start(data)
            return
        read = self.server.read
        if read == "callback" or read == "lowat":
            return
        try:
            messages = self.decoder.feed(data)
        except ProtocolError:
            self.close()
            return
        for kind, payload in messages:  # the call's hot path, without its work
            if kind == 0x10 and len(payload) == 320:
                continue
            if kind == Kind.HANGUP:
                self.close()
                return

    def _start(self, data: bytes) -> None:
        if len(data) < 19 or data[0] != Kind.UUID:
            self.close()
            return
        self.started = True
        if self.server.read == "decode":
            self.decoder.feed(data[:19])
        transport = self.transport
        assert transport is not None
        if self.server.read == "lowat":
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, LOWAT_MESSAGES * 323)
        if self.server.read == "tick" or self.server.write == "socket":
            fd = transport.get_extra_info("socket").fileno()
            self.sock = socket.socket(fileno=os.dup(fd))
            self.sock.setblocking(False)
        if self.server.read == "tick":
            transport.pause_reading()  # the loop no longer polls it: the clock's tick reads it
        self.sink = self.sock if self.server.write == "socket" else transport  # type: ignore[assignment]
        self.server.join(self)

    def tick(self, frame: bytes, read: bool) -> None:
        sink = self.sink
        assert sink is not None
        try:
            if sink.__class__ is socket.socket:
                sink.send(frame)
            else:
                sink.write(frame)  # type: ignore[attr-defined]
            if read:
                sock = self.sock
                assert sock is not None
                try:
                    if not sock.recv(65536):
                        self.close()
                except BlockingIOError:
                    pass
        except (BlockingIOError, ConnectionError, OSError):
            self.close()

    def close(self) -> None:
        self.server.leave(self)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.leave(self)
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class PyFloor:
    """The server and its clock: ten 2 ms phases, each call in one, written (and maybe read) at its phase."""

    def __init__(self, read: str, write: str) -> None:
        if read not in READS or write not in WRITES:
            raise ValueError(f"--read must be one of {READS} and --write one of {WRITES}")
        self.read = read
        self.write = write
        self.frame = AUDIO_HEADER_320 + tone_frame(400)
        self.phases: list[dict[FloorCall, None]] = [{} for _ in range(PHASES)]
        self.next_phase = 0
        self.lateness = Histogram()
        self.calls_total = 0

    def join(self, call: FloorCall) -> None:
        call.phase = self.next_phase
        self.next_phase = (self.next_phase + 1) % PHASES
        self.phases[call.phase][call] = None
        self.calls_total += 1

    def leave(self, call: FloorCall) -> None:
        if call.phase >= 0:
            self.phases[call.phase].pop(call, None)
            call.phase = -1

    async def clock(self) -> None:
        mono = time.monotonic
        frame = self.frame
        read = self.read == "tick"
        t0 = mono()
        k = 0
        while True:
            due = t0 + k * PHASE_S
            now = mono()
            if due > now:
                await asyncio.sleep(due - now)
                now = mono()
            self.lateness.observe(now - due)
            for call in tuple(self.phases[k % PHASES]):
                call.tick(frame, read)
            k += 1
            if mono() - (t0 + k * PHASE_S) > 0.1:  # far behind: restart the schedule, as the bridge does
                t0, k = mono(), 0

    def log_stats(self) -> None:
        calls = sum(len(p) for p in self.phases)
        log.info("clock stats", calls=calls, clock={"lateness": self.lateness.summary_ms(), "resyncs": 0})
        self.lateness.reset()


async def main(args: argparse.Namespace) -> int:
    configure_logging("info", "json")
    floor = PyFloor(args.read, args.write)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FloorCall(floor), "127.0.0.1", args.port, backlog=4096,
                                      reuse_address=True)
    clock = asyncio.create_task(floor.clock())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, floor.log_stats)
    log.info("listening", host="127.0.0.1", port=server.sockets[0].getsockname()[1], read=args.read,
             write=args.write, loop=type(loop).__module__.split(".")[0])
    await stop.wait()
    clock.cancel()
    server.close()
    log.info("stopped", calls_total=floor.calls_total)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.pyfloor", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--read", choices=READS, default="callback")
    parser.add_argument("--write", choices=WRITES, default="transport")
    return parser


if __name__ == "__main__":
    sys.exit(run_event_loop(main(build_parser().parse_args())))
