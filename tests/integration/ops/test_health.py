"""`/healthz` and `/readyz` of a real `voice-bridge serve`: readiness follows accepting, dependencies reported."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

from bridge.sim.caller import place_call
from support.process import ServeProcess, clean_env, get, load_fragments
from voice.emulators.elevenlabs import DEFAULT_API_KEY, Emulator
from voice.emulators.redis_server import free_port


async def poll(url: str, predicate, timeout_s: float = 10.0, **kw):
    """GET `url` until `predicate(response)` holds; the last response."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await get(url, **kw)
        if predicate(response) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_readyz_turns_unready_when_the_bridge_stops_accepting(redis_url):
    await load_fragments(redis_url)
    metrics_port = free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    async with Emulator(api_key=DEFAULT_API_KEY) as emulator:
        env = clean_env(REDIS_URL=redis_url, ELEVENLABS_API_KEY=DEFAULT_API_KEY, ELEVENLABS_BASE_URL=emulator.url,
                        METRICS_PORT=str(metrics_port), BRIDGE_PORT="0", BRIDGE_SHUTDOWN_GRACE="30",
                        LOG_FORMAT="json")
        async with ServeProcess(env=env) as serve:
            ready = await get(f"{base}/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["ready"] is True and body["status"] == "ok" and body["accepting"] is True
            assert body["checks"]["redis"]["ok"] is True and body["checks"]["tts"]["ok"] is True
            assert body["checks"]["tts"]["target"] == f"127.0.0.1:{emulator.port}"
            assert body["checks"]["redis"]["target"] == redis_url

            # a call that outlives the stop signal keeps the process up during its grace period
            call = asyncio.create_task(place_call("127.0.0.1", serve.port, duration_s=None, max_wait_s=30))
            await serve.wait_for("call_started")
            serve.proc.terminate()
            await serve.wait_for("stopping")
            unready = await get(f"{base}/readyz")
            assert unready.status_code == 503
            assert unready.json()["ready"] is False and unready.json()["status"] == "stopping"
            assert unready.json()["calls"] == 1  # still in its grace period, still playing
            alive = await get(f"{base}/healthz")
            assert alive.status_code == 200 and alive.json()["status"] == "alive"
            # new calls are not accepted any more
            assert not await _connects(serve.port)

            serve.proc.terminate()  # a second signal hangs the call up at once
            report = await call
            assert report.hangup == "server"
            assert await serve.exited() == 0  # no third signal: the second one ends it


async def _connects(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


async def test_readyz_reports_redis_and_tts_down_and_back(own_redis):
    metrics_port = free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    redis = own_redis
    async with Emulator(api_key=DEFAULT_API_KEY) as emulator:
        emulator_port = emulator.port
        env = clean_env(REDIS_URL=redis.url, ELEVENLABS_API_KEY=DEFAULT_API_KEY,
                        ELEVENLABS_BASE_URL=emulator.url, METRICS_PORT=str(metrics_port), BRIDGE_PORT="0",
                        REDIS_BREAKER_COOLOFF="0.2", LOG_FORMAT="json")
        async with ServeProcess(env=env) as serve:
            assert (await get(f"{base}/readyz")).json()["status"] == "ok"

            redis.stop(kill=True)
            degraded = await poll(f"{base}/readyz", lambda r: not r.json()["checks"]["redis"]["ok"])
            body = degraded.json()
            assert degraded.status_code == 200  # calls still work without the cache: degraded, not down
            assert body["status"] == "degraded" and body["ready"] is True
            assert body["checks"]["redis"]["ok"] is False and body["checks"]["tts"]["ok"] is True
            assert body["checks"]["redis"]["target"] == redis.url
            strict = await get(f"{base}/readyz", params={"strict": "1"})
            assert strict.status_code == 503 and strict.json()["checks"]["redis"]["ok"] is False

            redis.start()
            back = await poll(f"{base}/readyz", lambda r: r.json()["status"] == "ok")
            assert back.json()["checks"]["redis"]["ok"] is True

            await emulator.stop()
            tts_down = await get(f"{base}/readyz")
            assert tts_down.json()["checks"]["tts"]["ok"] is False
            assert tts_down.json()["checks"]["tts"]["target"] == f"127.0.0.1:{emulator_port}"
            assert tts_down.json()["status"] == "degraded"
            assert await serve.stop() == 0


async def test_healthz_and_readyz_without_a_dialogue(redis_url):
    """`serve --silence` has no cache: readiness reports only the TTS check (which fails: no service)."""
    metrics_port = free_port()
    env = clean_env(METRICS_PORT=str(metrics_port), BRIDGE_PORT="0", LOG_FORMAT="json",
                    ELEVENLABS_BASE_URL=f"http://127.0.0.1:{free_port()}")
    async with ServeProcess("--silence", env=env) as serve:
        health = await get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert health.status_code == 200
        ready = await get(f"http://127.0.0.1:{metrics_port}/readyz")
        assert ready.status_code == 200 and set(ready.json()["checks"]) == {"tts"}
        assert ready.json()["checks"]["tts"]["ok"] is False and "error" in ready.json()["checks"]["tts"]
        missing = await get(f"http://127.0.0.1:{metrics_port}/nothing")
        assert missing.status_code == 404
        assert await serve.stop() == 0


async def test_a_taken_metrics_port_stops_serve_with_an_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--silence",
            env=clean_env(METRICS_PORT=str(port), BRIDGE_PORT="0", LOG_FORMAT="json"),
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err  # a configuration error, named: the bridge never said it was listening
    assert f"voice-bridge serve: cannot listen on METRICS_HOST=127.0.0.1 METRICS_PORT={port}: port {port} is in " \
           "use".encode() in err
    assert b'"event": "listening"' not in err
