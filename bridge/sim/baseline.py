"""The common peer design, kept only as a yardstick for `voice-bridge bench --baseline`.

Several open-source AudioSocket bridges pace audio like this: one task per call on asyncio streams reads
messages with `readexactly`, and the call's sender writes a frame, awaits `drain()`, then
`await asyncio.sleep(0.02)`. The sleep starts after the work, so every period lasts 20 ms plus the write,
plus the timer's lateness, plus whatever else the loop was doing: the stream drifts slow (a realtime ratio
below 1) and grows gaps under load. This server does exactly that and nothing more, honestly: the same
event loop as the bridge (uvloop when installed), the same precomputed frames, the same Redis reads for the
`static` mode (the call's variables, then each fragment with one LRANGE, as the bridge does without its
memo). It is not part of the product; nothing imports it but the benchmark.

    python -m bridge.sim.baseline --port 0 --mode silence|tone|static [--redis-url URL --play a,b,c]

Logs (JSON on stderr) mirror the bridge's where the benchmark reads them: `listening` (with the port),
`clock_stats` on SIGUSR1 (here: how much longer than 20 ms each `sleep(0.02)` took, the drift per frame),
`stopped` on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid as uuid_module
from typing import Any

import structlog

from bridge.clock import Histogram
from bridge.ops.logs import configure_logging
from bridge.protocol import AUDIO_HEADER_320, HEADER_BYTES, SILENCE_FRAME, Kind
from bridge.server import run_event_loop, tone_frame
from voice.keys import call_vars_key, static_key

log = structlog.get_logger(__name__)

FRAME_S = 0.02


class BaselineServer:
    """A task per call; each sends a frame, drains, sleeps 20 ms, and again."""

    def __init__(self, mode: str, *, tone_hz: float = 400.0, redis_url: str = "", play: tuple[str, ...] = ()) -> None:
        self.mode = mode
        self.tone = AUDIO_HEADER_320 + tone_frame(tone_hz)
        self.play = play
        self.redis_url = redis_url
        self.redis: Any = None  # redis.asyncio.Redis in the static mode
        self.overshoot = Histogram()
        self.calls: set[asyncio.Task[None]] = set()
        self.calls_total = 0

    async def start(self, host: str, port: int) -> asyncio.base_events.Server:
        if self.mode == "static":
            import redis.asyncio as aioredis

            self.redis = aioredis.Redis.from_url(self.redis_url, max_connections=64)
        server = await asyncio.start_server(self._handle, host, port, backlog=4096, reuse_address=True)
        log.info("listening", host=host, port=server.sockets[0].getsockname()[1], mode=self.mode,
                 loop=type(asyncio.get_running_loop()).__module__.split(".")[0])
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            header = await reader.readexactly(HEADER_BYTES)
            if header[0] != Kind.UUID:
                return
            call_uuid = uuid_module.UUID(bytes=await reader.readexactly(int.from_bytes(header[1:3], "big")))
            self.calls_total += 1
            sender = asyncio.ensure_future(self._send(writer, call_uuid))
            try:
                await self._read_until_hangup(reader)
            finally:
                sender.cancel()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self.calls.discard(task)
            writer.close()

    @staticmethod
    async def _read_until_hangup(reader: asyncio.StreamReader) -> None:
        while True:
            header = await reader.readexactly(HEADER_BYTES)
            length = int.from_bytes(header[1:3], "big")
            if length:
                await reader.readexactly(length)
            if header[0] == Kind.HANGUP:
                return

    async def _send(self, writer: asyncio.StreamWriter, call_uuid: uuid_module.UUID) -> None:
        try:
            if self.mode == "static":
                await self.redis.get(call_vars_key(call_uuid))
                while True:
                    for name in self.play:
                        frames = await self.redis.lrange(static_key(name), 0, -1)
                        for frame in frames:
                            await self._write_and_sleep(writer, AUDIO_HEADER_320 + frame)
            frame = self.tone if self.mode == "tone" else SILENCE_FRAME
            while True:
                await self._write_and_sleep(writer, frame)
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _write_and_sleep(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        writer.write(frame)
        await writer.drain()
        before = time.monotonic()
        await asyncio.sleep(FRAME_S)
        self.overshoot.observe(time.monotonic() - before - FRAME_S)

    def log_stats(self) -> None:
        log.info("clock_stats", calls=len(self.calls), clock={"sleep_overshoot": self.overshoot.summary_ms()})
        self.overshoot.reset()


async def serve(args: argparse.Namespace) -> int:
    baseline = BaselineServer(args.mode, tone_hz=args.tone, redis_url=args.redis_url,
                              play=tuple(filter(None, args.play.split(","))))
    server = await baseline.start(args.host, args.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, baseline.log_stats)
    await stop.wait()
    server.close()
    for task in list(baseline.calls):
        task.cancel()
    if baseline.calls:
        await asyncio.wait(list(baseline.calls), timeout=5)
    if baseline.redis is not None:
        await baseline.redis.aclose()
    log.info("stopped", calls_total=baseline.calls_total)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=("silence", "tone", "static"), default="silence")
    parser.add_argument("--tone", type=float, default=400.0, metavar="HZ")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--play", default="", help="static mode: fragment names played in a loop, comma-separated")
    args = parser.parse_args(argv)
    if args.mode == "static" and not args.play:
        parser.error("--mode static needs --play")
    configure_logging("info", "json")
    return run_event_loop(serve(args))


if __name__ == "__main__":
    sys.exit(main())
