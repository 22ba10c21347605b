"""Micro-benchmarks of the bridge's per-message and per-frame Python work, in nanoseconds per operation.

Each figure is the best of several `timeit` repeats (the least disturbed by other work on the machine) of
one operation the call path does 50 times a second per call, on the real classes:

- inbound: `Decoder.feed` of one 323-byte audio message (what `data_received` does per message), and of
  ten coalesced (what a batched read on the clock's tick would decode at once, per message);
  the speech check `SpeechDetector.feed` disarmed (no barge-in-able prompt) and armed (one `rms`);
- inbound, the whole callback: `Call.data_received` of one message and of five in one read (a batched
  read), on a call whose format is judged (the fast path), with no listener armed;
- outbound: the frame a run builds (`AUDIO_HEADER_320 + payload`), a deque pop, a bound-method call
  (the clock's `member.clock_tick()` dispatch).

    .venv/bin/python -m bridge.sim.bench.micro [--number 200000]

A figure times 50 messages per second gives its share of one call-second: 1 µs per message is 50 µs per
call-second, 7 % of the C floor's ~700 µs.
"""

from __future__ import annotations

import argparse
import collections
import sys
import timeit
from collections.abc import Callable

from bridge.barge_in import SpeechDetector
from bridge.call import Call, CallHost
from bridge.config import BridgeConfig
from bridge.protocol import AUDIO_HEADER_320, Decoder, encode_uuid

__all__ = ["main", "measure"]

PAYLOAD = bytes(range(256)) + bytes(64)
MESSAGE = AUDIO_HEADER_320 + PAYLOAD


def _ns(stmt: Callable[[], object], number: int, per_call: int = 1) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))
    return best / number / per_call * 1e9


class _Clock:
    def add(self, call: Call) -> None: ...
    def discard(self, call: Call) -> None: ...
    def expedite(self, call: Call) -> bool:
        return False


class _Host(CallHost):
    def __init__(self) -> None:
        self.config = BridgeConfig()
        self.clock = _Clock()  # type: ignore[assignment]

    def connection_opened(self, call: Call) -> bool:
        return True

    def call_ready(self, call: Call) -> None: ...
    def call_ended(self, call: Call) -> None: ...
    def connection_closed(self, call: Call) -> None: ...


class _Transport:
    """Enough of a transport for `Call.connection_made` (no socket: no SO_RCVLOWAT)."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_write_buffer_limits(self, high: int) -> None: ...
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...


def judged_call() -> Call:
    """A call past its UUID whose inbound format has been judged slin 8 kHz (its first frames, 20 ms apart)."""
    import asyncio
    import uuid

    async def build() -> Call:
        call = Call(_Host())
        call.connection_made(_Transport())  # type: ignore[arg-type]
        call.data_received(encode_uuid(uuid.uuid4()))
        for _ in range(12):
            call.data_received(MESSAGE)
            await asyncio.sleep(0.02)
        return call  # its join timer is dropped with the loop; the fast path needs no loop

    return asyncio.run(build())


def measure(number: int = 200_000) -> dict[str, float]:
    """Nanoseconds per operation for each named operation (see the module's docstring)."""
    import uuid

    decoder = Decoder(expect_uuid=True)
    decoder.feed(encode_uuid(uuid.uuid4()))
    ten = MESSAGE * 10
    disarmed = SpeechDetector(threshold=500, min_ms=200)
    armed = SpeechDetector(threshold=1 << 30, min_ms=200)  # never triggers: every frame is measured
    armed.armed = True
    queue: collections.deque[bytes] = collections.deque()

    class Member:
        def clock_tick(self) -> None:
            pass

    tick = Member().clock_tick
    call = judged_call()
    five = MESSAGE * 5

    def pop() -> None:
        queue.append(MESSAGE)
        queue.popleft()

    def handle_one() -> None:  # the call's hot path per message, without the on_audio work
        for kind, payload in decoder.feed(MESSAGE):
            if kind == 0x10 and len(payload) == 320:
                pass

    return {
        "decode one message (Decoder.feed)": _ns(lambda: decoder.feed(MESSAGE), number),
        "decode ten coalesced messages, per message": _ns(lambda: decoder.feed(ten), number // 10, 10),
        "decode and walk one message (the hot path of Call._handle)": _ns(handle_one, number),
        "Call.data_received of one message (no listener)": _ns(lambda: call.data_received(MESSAGE), number),
        "Call.data_received of five in one read, per message": _ns(lambda: call.data_received(five), number // 5, 5),
        "speech check, disarmed (SpeechDetector.feed)": _ns(lambda: disarmed.feed(PAYLOAD, 8000), number),
        "speech check, armed (rms of 160 samples)": _ns(lambda: armed.feed(PAYLOAD, 8000), number),
        "frame of a run (AUDIO_HEADER_320 + payload)": _ns(lambda: AUDIO_HEADER_320 + PAYLOAD, number),
        "deque append + popleft": _ns(pop, number),
        "bound method call (the clock's member.clock_tick())": _ns(tick, number),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim.bench.micro", description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="operations per timing [default 200000]")
    args = parser.parse_args(argv)
    if args.number < 10:
        parser.error("--number must be at least 10")
    results = measure(args.number)
    width = max(len(name) for name in results)
    print(f"{'operation':<{width}}  ns/op   µs per call-second (x50)")
    for name, ns in results.items():
        print(f"{name:<{width}}  {ns:6.0f}  {ns * 50 / 1000:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
