"""Benchmark of the operator endpoint: what a Prometheus scrape and a readiness probe cost a busy bridge.

    .venv/bin/python bridge/sim/bench/metrics.py              # 500 calls connected
    .venv/bin/python bridge/sim/bench/metrics.py --calls 50   # while developing

Starts the AudioSocket server (silence handler) with its metrics wired, the `/metrics` endpoint, and N
simulated calls in this process, then times, with every call playing:
* `/metrics` and `/healthz` over HTTP (client-side latency; the calls share the event loop, so this is also
  how long a scrape holds the loop the calls' clock runs on);
* the exposition alone (`generate_latest`) in the loop;
* one clock-lateness observation (the metric the media clock feeds every 2 ms phase).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

import httpx
import structlog
from prometheus_client.exposition import generate_latest

from bridge.config import Settings
from bridge.ops.health import HealthServer
from bridge.ops.metrics import Metrics
from bridge.server import AudioSocketServer
from bridge.sim.caller import place_call


def _summary(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p99 = ms[min(len(ms) - 1, round(0.99 * len(ms)) - 1)]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms ({len(ms)} requests)"


async def main(calls: int, requests: int) -> None:
    settings = Settings.load({}, port=0)
    metrics = Metrics()
    server = AudioSocketServer(settings.bridge, metrics=metrics)
    await server.start()
    health = HealthServer(server, metrics, settings, port=0, check_tts=False)
    await health.start()
    callers = [asyncio.create_task(place_call("127.0.0.1", server.port, duration_s=None, max_wait_s=600))
               for _ in range(calls)]
    while len(server.calls) < calls:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    results = {}
    async with httpx.AsyncClient() as client:
        for path in ("/metrics", "/healthz"):
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get(health.url + path)
                samples.append(time.perf_counter() - started)
                assert response.status_code == 200
                await asyncio.sleep(0.01)
            results[path] = samples
    exposition = []
    for _ in range(requests):
        started = time.perf_counter()
        generate_latest(metrics.registry)
        exposition.append(time.perf_counter() - started)
    observe_n = 100_000
    started = time.perf_counter()
    for _ in range(observe_n):
        metrics.clock_lateness.observe(0.0005)
    observe_us = (time.perf_counter() - started) / observe_n * 1e6
    frames = server.frames_sent_total()
    for task in callers:
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await health.stop()
    await server.stop(0)
    print(f"{calls} calls connected ({frames} frames sent so far)")
    for path, samples in results.items():
        print(f"GET {path:9} {_summary(samples)}")
    print(f"generate_latest  {_summary(exposition)}")
    print(f"clock_lateness.observe: {observe_us:.2f} us (x 500 phases/s = {observe_us * 500 / 1e4:.3f} % of a core)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(args.calls, args.requests))
