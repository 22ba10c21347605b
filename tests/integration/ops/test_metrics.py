"""The Prometheus endpoint of a real `voice-bridge serve`, after real calls through Redis and the emulator."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bridge.sim.caller import place_call
from support.process import ServeProcess, clean_env, get, load_fragments
from voice.emulators.elevenlabs import DEFAULT_API_KEY, Emulator, Knobs, identify
from voice.emulators.redis_server import free_port
from voice.keys import call_vars_key

# A synthesis first (slow emulator: a filler plays), then fragments the caller interrupts with "0".
DIALOGUE = """
start = "greeting"
[vars]
amount = "777"
[nodes.greeting]
play = [ { tts = "{amount}" }, { static = "hello" }, { static = "menu" } ]
barge_in = true
dtmf = { "0" = "goodbye" }
timeout_s = 5
next = "goodbye"
[nodes.goodbye]
play = [ { static = "goodbye" } ]
hangup = true
"""

FAMILIES = {
    "voicebridge_active_calls", "voicebridge_calls", "voicebridge_calls_rejected", "voicebridge_cache_lookups",
    "voicebridge_tts_requests", "voicebridge_tts_errors", "voicebridge_tts_first_byte_seconds",
    "voicebridge_fillers_played", "voicebridge_barge_ins", "voicebridge_frames_sent",
    "voicebridge_clock_lateness_seconds",
}


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


@pytest.mark.slow
async def test_metrics_endpoint_serves_every_family_after_real_calls(redis_url, tmp_path):
    await load_fragments(redis_url)
    dialogue = tmp_path / "dialogue.toml"
    dialogue.write_text(DIALOGUE)
    metrics_port = free_port()
    async with Emulator(api_key=DEFAULT_API_KEY, knobs=Knobs(ttfb_ms=700)) as emulator:
        env = clean_env(REDIS_URL=redis_url, ELEVENLABS_API_KEY=DEFAULT_API_KEY, ELEVENLABS_BASE_URL=emulator.url,
                        DIALOGUE_FILE=str(dialogue), METRICS_PORT=str(metrics_port), LOG_FORMAT="json",
                        BRIDGE_PORT="0", BRIDGE_UUID_TIMEOUT="0.3", FILLER_AFTER="0.3")
        async with ServeProcess(env=env) as serve:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            before = await get(url)
            assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
            assert families(before.text) >= FAMILIES - {"voicebridge_calls_rejected", "voicebridge_tts_errors"}

            # call 1: a miss synthesized slowly (a filler plays), then "0" interrupts the menu
            call = asyncio.create_task(place_call("127.0.0.1", serve.port, duration_s=None, dtmf=[(2.2, "0")],
                                                  keep_audio=True, max_wait_s=20))
            await serve.wait_for("node", node="greeting")
            during = scrape((await get(url)).text)
            assert during[("voicebridge_active_calls", ())] == 1
            first = await call
            assert first.hangup == "server" and first.error is None
            assert "777" in identify(first.audio)

            # call 2: the emulator refuses the key -> a TTS error, the fallback fragment plays
            emulator.set_knobs(fail_status=401)
            client = aioredis.Redis.from_url(redis_url)
            second_uuid = uuid.uuid4()
            await client.set(call_vars_key(second_uuid), json.dumps({"amount": "888"}), ex=60)
            await client.aclose()
            second = await place_call("127.0.0.1", serve.port, uuid=second_uuid, duration_s=None,
                                      dtmf=[(3.5, "0")], max_wait_s=20)
            assert second.hangup == "server"

            # a connection that never sends its UUID is not a call: rejected, by reason
            with socket.create_connection(("127.0.0.1", serve.port)) as silent:
                silent.settimeout(5)
                while silent.recv(4096):
                    pass
            await asyncio.sleep(0.1)

            response = await get(url)
            assert await serve.stop() == 0

    text = response.text
    assert families(text) >= FAMILIES
    m = scrape(text)
    assert m[("voicebridge_calls_total", ())] == 2
    assert m[("voicebridge_active_calls", ())] == 0
    assert m[("voicebridge_calls_rejected_total", (("reason", "no-uuid"),))] == 1
    # frames: at least what the two callers received (the server also counts frames it wrote at hang-up)
    assert m[("voicebridge_frames_sent_total", ())] >= first.frames + second.frames
    assert m[("voicebridge_cache_lookups_total", (("kind", "tts"), ("result", "miss")))] == 2
    assert m[("voicebridge_cache_lookups_total", (("kind", "static"), ("result", "hit")))] >= 4
    assert m[("voicebridge_tts_requests_total", (("api", "http"),))] == 2
    assert m[("voicebridge_tts_errors_total", (("error", "TTSAuthError"),))] == 1
    assert m[("voicebridge_tts_first_byte_seconds_count", (("api", "http"),))] == 1
    assert m[("voicebridge_tts_first_byte_seconds_sum", (("api", "http"),))] >= 0.6  # the emulator's 700 ms
    assert m[("voicebridge_fillers_played_total", ())] >= 1
    assert m[("voicebridge_barge_ins_total", (("by", "dtmf"),))] == 2
    assert m[("voicebridge_clock_lateness_seconds_count", ())] > 100
    # no per-call label anywhere: label values are a small fixed set
    labels = {v for (_, lbls) in m for _, v in lbls}
    assert not any(first.uuid in v or str(second_uuid) in v for v in labels)


async def test_metrics_negotiates_openmetrics(redis_url):
    metrics_port = free_port()
    env = clean_env(REDIS_URL=redis_url, METRICS_PORT=str(metrics_port), BRIDGE_PORT="0", LOG_FORMAT="json")
    async with ServeProcess("--silence", env=env) as serve:
        response = await get(f"http://127.0.0.1:{metrics_port}/metrics",
                             headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.rstrip().endswith("# EOF")
        await serve.stop()
