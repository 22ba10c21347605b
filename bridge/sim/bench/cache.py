"""Benchmark of the voice cache: `get_audio_chunks` latency, and the cost of a call while Redis is down.

    .venv/bin/python bridge/sim/bench/cache.py                      # full run (a private redis-server)
    .venv/bin/python bridge/sim/bench/cache.py --quick              # small sizes, while developing
    .venv/bin/python bridge/sim/bench/cache.py --redis-url redis://host:6379/0 --loop asyncio

Reads a 3 s fragment (150 chunks of 20 ms, 320 bytes each) with RedisCacheManager:
* closed loop: N callers each read back to back (the worst case: every caller always waiting on Redis);
* paced: N callers each read once per `--interval-ms`, at random phases (a busy bridge: a real call reads
  a fragment every second or two);
then, with Redis killed and the breaker open, times calls that skip Redis, and for contrast calls that
meet the dead Redis (connection refused) with the breaker disabled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time

import structlog

from voice.audio import FRAME_BYTES
from voice.cache import RedisCacheManager
from voice.config import CacheConfig
from voice.emulators.redis_server import RedisServer, free_port

KEY = "static:bench_3s"
CHUNKS = [bytes([i % 256]) * FRAME_BYTES for i in range(150)]


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"n": len(ordered), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": ordered[-1] / 1e6}


async def closed_loop(cache: RedisCacheManager, callers: int, reads: int) -> dict[str, float]:
    samples: list[int] = []

    async def caller() -> None:
        for _ in range(reads):
            start = time.perf_counter_ns()
            got = await cache.get_audio_chunks(KEY)
            samples.append(time.perf_counter_ns() - start)
            assert got is not None and len(got) == 150

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    result = percentiles(samples)
    result["reads_per_s"] = len(samples) / (time.perf_counter() - started)
    return result


async def paced(cache: RedisCacheManager, callers: int, reads: int, interval_s: float) -> dict[str, float]:
    samples: list[int] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05

    async def caller() -> None:
        phase = random.random() * interval_s
        for n in range(reads):
            await asyncio.sleep(max(0.0, t0 + phase + n * interval_s - loop.time()))
            start = time.perf_counter_ns()
            got = await cache.get_audio_chunks(KEY)
            samples.append(time.perf_counter_ns() - start)
            assert got is not None and len(got) == 150

    await asyncio.gather(*(caller() for _ in range(callers)))
    result = percentiles(samples)
    result["reads_per_s"] = callers / interval_s
    return result


async def skipped_call_cost(calls: int) -> dict[str, float]:
    """Redis killed: the first call fails and opens the breaker; the next `calls` skip Redis."""
    with RedisServer() as server:
        cache = RedisCacheManager(CacheConfig(redis_url=server.url, breaker_cooloff_s=600))
        await cache.set_audio_chunks(KEY, CHUNKS)
        server.stop(kill=True)
        assert await cache.get_audio_chunks(KEY) is None and not cache.available
        started = time.perf_counter_ns()
        for _ in range(calls):
            await cache.get_audio_chunks(KEY)
        per_call_us = (time.perf_counter_ns() - started) / calls / 1e3
        assert cache.skipped == calls
        await RedisCacheManager.reset_instance()
    return {"calls": calls, "per_call_us": per_call_us}


async def refused_call_cost(calls: int) -> dict[str, float]:
    """For contrast: no breaker, every call meets a dead Redis (connection refused on loopback)."""
    cache = RedisCacheManager(CacheConfig(redis_url=f"redis://127.0.0.1:{free_port()}/0", breaker_cooloff_s=0))
    started = time.perf_counter_ns()
    for _ in range(calls):
        await cache.get_audio_chunks(KEY)
    per_call_us = (time.perf_counter_ns() - started) / calls / 1e3
    await RedisCacheManager.reset_instance()
    return {"calls": calls, "per_call_us": per_call_us}


async def bench(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # no failure logs
    server = None
    url = args.redis_url
    if not url:
        server = RedisServer().start()
        url = server.url
    try:
        cache = RedisCacheManager(CacheConfig(redis_url=url, max_connections=args.pool))
        await cache.connect()
        await cache.set_audio_chunks(KEY, CHUNKS)
        for _ in range(200):  # warm-up: connections, code paths
            await cache.get_audio_chunks(KEY)
        print(f"get_audio_chunks of a 3 s fragment (150 x 320 B), loop={args.loop}, pool={args.pool}, {url}")
        for callers in args.callers:
            reads = max(1, args.reads // callers)
            r = await closed_loop(cache, callers, reads)
            print(f"  closed loop {callers:4d} callers: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"max {r['max_ms']:.3f} ms  ({r['n']} reads, {r['reads_per_s']:.0f} reads/s)")
        for callers in args.callers:
            r = await paced(cache, callers, args.paced_reads, args.interval_ms / 1000)
            print(f"  paced       {callers:4d} callers: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"max {r['max_ms']:.3f} ms  ({r['n']} reads, {r['reads_per_s']:.0f} reads/s offered)")
        await RedisCacheManager.reset_instance()
    finally:
        if server is not None:
            server.close()
    r = await skipped_call_cost(args.skipped_calls)
    print(f"Redis down, breaker open: {r['per_call_us']:.2f} us per call ({r['calls']} calls)")
    r = await refused_call_cost(args.refused_calls)
    print(f"Redis down, no breaker (connection refused each time): {r['per_call_us']:.1f} us per call "
          f"({r['calls']} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="an existing Redis [default a private redis-server]")
    parser.add_argument("--callers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    parser.add_argument("--reads", type=int, default=20000, help="closed loop: total reads per caller count")
    parser.add_argument("--paced-reads", type=int, default=100, help="paced: reads per caller")
    parser.add_argument("--interval-ms", type=float, default=100.0, help="paced: ms between a caller's reads")
    parser.add_argument("--pool", type=int, default=64, help="REDIS_MAX_CONNECTIONS")
    parser.add_argument("--skipped-calls", type=int, default=100000)
    parser.add_argument("--refused-calls", type=int, default=2000)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop (serve uses uvloop when installed)")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args()
    if args.quick:
        args.reads, args.paced_reads, args.skipped_calls, args.refused_calls = 2000, 20, 10000, 200
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(bench(args))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
