"""Micro-benchmarks of the bridge's per-message and per-frame Python work, in nanoseconds per operation.

Each figure is the best of several `timeit` repeats (the least disturbed by other work on the machine) of
one operation the call path does 50 times a second per call, on the real classes:

- inbound: `Decoder.feed` of one 323-byte audio message (what `data_received` does per message), and of
  ten coalesced (what a batched read on the clock's tick would decode at once, per message);
  the speech check `SpeechDetector.feed` disarmed (no barge-in-able prompt) and armed (one `rms`);
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
from bridge.protocol import AUDIO_HEADER_320, Decoder, encode_uuid

__all__ = ["main", "measure"]

PAYLOAD = bytes(range(256)) + bytes(64)
MESSAGE = AUDIO_HEADER_320 + PAYLOAD


def _ns(stmt: Callable[[], object], number: int, per_call: int = 1) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))
    return best / number / per_call * 1e9


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
