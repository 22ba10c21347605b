"""End to end: Asterisk-like caller -> AudioSocket server -> orchestrator -> Redis and the TTS emulator."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from structlog.testing import capture_logs

from bridge.sim.caller import place_call
from support.process import ServeProcess, run_serve
from support.stack import frames_of, make_stack, nonzero, strip_silence, wait_for
from voice.emulators.elevenlabs import expected_frames, identify
from voice.keys import call_vars_key, profile_tag, tts_key

ZERO = bytes(320)

STATIC = """
start = "greeting"
[nodes.greeting]
play = [ { static = "hello" }, { static = "goodbye" } ]
hangup = true
"""

AMOUNT = """
start = "amount"
[vars]
amount = "12500"
[nodes.amount]
play = [ { tts = "{amount}" } ]
hangup = true
"""


def key_for(stack, text: str) -> str:
    return tts_key(text, profile_tag(stack.settings.tts))


# a. -----------------------------------------------------------------------------------------------------

async def test_all_static_greeting_plays_the_loaded_frames_at_once(stack):
    await stack.start(STATIC)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server" and report.error is None
    assert report.first_audio_ms is not None and report.first_audio_ms < 500  # the benchmark holds 40 ms
    expected = await stack.fragment("hello") + await stack.fragment("goodbye")
    assert nonzero(frames_of(report.audio)) == nonzero(expected)
    assert strip_silence(frames_of(report.audio))[: 5] == strip_silence(expected)[: 5]
    assert report.worst_burst_frames <= 3


# b. -----------------------------------------------------------------------------------------------------

async def test_tts_miss_is_heard_then_cached_and_the_next_call_is_a_hit(stack):
    await stack.start(AMOUNT)
    first = await stack.call(duration_s=None)
    assert first.hangup == "server"
    assert identify(first.audio) == ["12500"]
    assert nonzero(frames_of(first.audio)) == nonzero(
        expected_frames("12500", stack.settings.tts.output_format, stack.settings.cache.loudness_target)
    )
    key = key_for(stack, "12500")
    assert await wait_for(lambda: stack.redis.exists(key)), "synthesis not cached"
    assert 0 < await stack.redis.ttl(key) <= stack.settings.cache.tts_ttl_s
    assert stack.emulator.stats.http_requests == 1

    second = await stack.call(duration_s=None)
    assert identify(second.audio) == ["12500"]
    assert stack.emulator.stats.http_requests == 1, "a cache hit must not reach the TTS service"
    assert second.first_audio_ms is not None


# c. -----------------------------------------------------------------------------------------------------

async def test_two_calls_missing_the_same_text_share_one_synthesis(stack):
    stack.emulator.set_knobs(ttfb_ms=250)
    await stack.start(AMOUNT, filler_after_s=0)
    a, b = await asyncio.gather(stack.call(duration_s=None), stack.call(duration_s=None))
    assert identify(a.audio) == identify(b.audio) == ["12500"]
    assert stack.emulator.stats.http_requests == 1


async def test_a_slow_synthesis_gets_a_filler_first(stack):
    stack.emulator.set_knobs(ttfb_ms=900)
    await stack.start(AMOUNT, filler_after_s=0.2, filler_names=("filler_tak",))
    report = await stack.call(duration_s=None)
    heard = nonzero(frames_of(report.audio))
    filler = nonzero(await stack.fragment("filler_tak"))
    assert heard[: len(filler)] == filler
    assert identify(report.audio)[-1] == "12500"
    assert stack.runtime.metrics.fillers._value.get() == 1


# d. -----------------------------------------------------------------------------------------------------

PROMPT = "a prompt that keeps sounding without a pause in it"
BARGE = """
start = "prompt"
[nodes.prompt]
play = [ { tts = "a prompt that keeps sounding without a pause in it" } ]
barge_in = true
dtmf = { "1" = "bye" }
timeout_s = 2
next = "bye"
[nodes.bye]
play = [ { static = "goodbye" } ]
hangup = true
"""


def last_sound_before(report, start_ms: float, end_ms: float) -> float:
    """Arrival time of the last non-silent frame in [start_ms, end_ms)."""
    frames = frames_of(report.audio)
    times = [t for t, f in zip(report.arrivals_ms, frames, strict=True) if start_ms <= t < end_ms and f != ZERO]
    return max(times) if times else start_ms


async def test_caller_speech_stops_the_prompt(stack):
    await stack.start(BARGE)
    speak_at = 1.0
    placed = asyncio.ensure_future(stack.call(duration_s=None, speech_at=speak_at, speech_s=0.5))
    listening: set[bool] = set()  # whether the call hands its inbound frames to the detector
    while not placed.done():
        listening.update(call.on_audio is not None for call in stack.calls())
        await asyncio.sleep(0.02)
    report = await placed
    # handed over while the prompt could be interrupted, not during the goodbye (no barge-in there)
    assert listening == {True, False}
    frames = frames_of(report.audio)
    assert report.hangup == "server"
    # the prompt was playing before the caller spoke ...
    assert any(f != ZERO for t, f in zip(report.arrivals_ms, frames, strict=True) if 300 <= t < speak_at * 1000)
    # ... and stopped soon after: silence until the timeout's goodbye
    cut_ms = last_sound_before(report, speak_at * 1000, speak_at * 1000 + 1500) - speak_at * 1000
    print(f"speech barge-in cut after {cut_ms:.0f} ms")
    assert cut_ms < 400
    assert nonzero(frames)[-len(nonzero(await stack.fragment("goodbye"))):] == nonzero(await stack.fragment("goodbye"))
    assert stack.runtime.metrics.barge_ins.labels(by="speech")._value.get() == 1


async def test_a_digit_stops_the_prompt_and_moves_the_dialogue(stack):
    await stack.start(BARGE)
    report = await stack.call(duration_s=None, dtmf=[(1.0, "1")])
    frames = frames_of(report.audio)
    digit_ms = report.dtmf_sent[0][0]
    goodbye = nonzero(await stack.fragment("goodbye"))
    heard = nonzero(frames)
    assert heard[-len(goodbye):] == goodbye
    prompt_part = heard[: -len(goodbye)]
    prompt = nonzero(expected_frames(PROMPT, stack.settings.tts.output_format, stack.settings.cache.loudness_target))
    assert 10 < len(prompt_part) < len(prompt)
    assert prompt_part[:-1] == prompt[: len(prompt_part) - 1]
    # the cut fades out (no click): the last frame heard is the prompt's next one, ramped down to silence
    faded, following = prompt_part[-1], prompt[len(prompt_part) - 1]
    assert faded[:2] == following[:2] and faded[80:] == bytes(240)
    # the goodbye came right after the digit (no 2 s timeout), and the menu stopped
    goodbye_start = [t for t, f in zip(report.arrivals_ms, frames, strict=True) if f == goodbye[0]][-1]
    assert goodbye_start - digit_ms < 500
    assert stack.runtime.metrics.barge_ins.labels(by="dtmf")._value.get() == 1


# e. -----------------------------------------------------------------------------------------------------

MENU = """
start = "a"
[nodes.a]
play = [ { static = "hello" } ]
dtmf = { "1" = "b", "9" = "end" }
timeout_s = 4
next = "end"
[nodes.b]
play = [ { static = "your_cost_is" } ]
dtmf = { "2" = "c" }
timeout_s = 4
next = "end"
[nodes.c]
play = [ { static = "rubles" } ]
dtmf = { "3" = "a" }
timeout_s = 0.5
next = "end"
[nodes.end]
play = [ { static = "goodbye" } ]
hangup = true
"""


@pytest.mark.slow
async def test_dtmf_walks_three_nodes_then_times_out(stack):
    await stack.start(MENU)
    hello, cost, rubles, bye = [await stack.fragment(n) for n in ("hello", "your_cost_is", "rubles", "goodbye")]
    t1 = len(hello) * 0.02 + 0.4
    t2 = t1 + 0.1 + len(cost) * 0.02 + 0.4
    report = await stack.call(duration_s=None, dtmf=[(t1, "1"), (t2, "2")])
    assert report.hangup == "server"
    assert nonzero(frames_of(report.audio)) == nonzero(hello + cost + rubles + bye)


LOOP = """
start = "a"
[nodes.a]
play = [ { static = "hello" } ]
next = "b"
[nodes.b]
play = [ { static = "rubles" } ]
next = "a"
"""


async def test_a_hangup_ends_the_dialogue_walk_at_once(stack):
    """A dialogue that would go on for ever stops with the caller: no node starts after the call ended,
    and the call leaves no task behind."""
    await stack.start(LOOP)
    with capture_logs() as logs:
        report = await stack.call(duration_s=1.5)
        assert await wait_for(lambda: not stack.server.calls)
        await asyncio.sleep(0.2)
    assert report.hangup == "caller"
    events = [entry["event"] for entry in logs]
    assert events.count("node") >= 2, events
    ended = events.index("call_ended")
    assert "node" not in events[ended:], events[ended:]
    assert "dialogue_failed" not in events
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("call:")]


# f. -----------------------------------------------------------------------------------------------------

MIXED = """
start = "mixed"
[nodes.mixed]
play = [ { static = "hello" }, { tts = "7300" }, { static = "rubles" } ]
hangup = true
"""


async def test_with_redis_down_tts_items_still_play_and_the_call_ends(tmp_path, own_redis):
    private = own_redis
    async with make_stack(private.url) as stack:
        await stack.start(MIXED)
        private.stop(kill=True)
        report = await stack.call(duration_s=None)
        assert report.hangup == "server"
        assert identify(report.audio) == ["7300"]
        assert stack.emulator.stats.http_requests == 1


# g. -----------------------------------------------------------------------------------------------------

async def test_a_failing_tts_plays_the_fallback_fragment(stack):
    stack.emulator.set_knobs(fail_status=500)
    await stack.start(AMOUNT)
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    assert nonzero(frames_of(report.audio)) == nonzero(await stack.fragment("fallback"))
    assert not await stack.redis.exists(key_for(stack, "12500"))


async def test_a_dead_tts_service_plays_the_fallback_fragment(stack):
    await stack.start(AMOUNT)
    await stack.emulator.stop()
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    assert nonzero(frames_of(report.audio)) == nonzero(await stack.fragment("fallback"))


# h. -----------------------------------------------------------------------------------------------------

LONG = """
start = "long"
[nodes.long]
play = [ { tts = "Это очень длинная фраза, которую синтез произносит медленно." } ]
hangup = true
"""


async def test_hangup_during_a_synthesis_caches_nothing_and_leaves_no_task(stack):
    stack.emulator.set_knobs(realtime_factor=1.0, chunk_bytes=640)
    await stack.start(LONG)
    report = await stack.call(duration_s=0.6)
    assert report.hangup == "caller"
    hub = stack.runtime.hub
    assert await wait_for(lambda: not hub.in_flight and not stack.server.calls), "synthesis or call left behind"
    await asyncio.sleep(0.2)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("synthesis", "call:"))]
    keys = [k async for k in stack.redis.scan_iter("tts:*")]
    assert keys == [], "a cut synthesis must not be cached"
    assert await wait_for(lambda: stack.emulator.stats.concurrent == 0)


async def test_hangup_during_a_synthesis_is_no_failure_and_plays_no_fallback(stack):
    """Issue 12: a caller leaving mid-synthesis logged `tts_item_failed` and read `static:fallback` for nothing."""
    stack.emulator.set_knobs(realtime_factor=1.0, chunk_bytes=640)
    await stack.start(LONG)
    with capture_logs() as logs:
        report = await stack.call(duration_s=0.6)
        assert await wait_for(lambda: not stack.server.calls)
        await asyncio.sleep(0.2)
    assert report.hangup == "caller"
    events = [entry["event"] for entry in logs]
    assert "tts_item_failed" not in events and "dialogue_failed" not in events, events
    assert not [e for e in logs if e.get("fragment") == "fallback"], events


# i. -----------------------------------------------------------------------------------------------------

VARS = """
start = "v"
[vars]
amount = "12500"
[nodes.v]
play = [ { tts = "{amount}" }, { tts = "{name}" }, { static = "goodbye" } ]
hangup = true
"""


async def test_call_variables_override_defaults_and_a_missing_one_is_skipped(stack):
    call_id = uuid.uuid4()
    await stack.redis.set(call_vars_key(call_id), json.dumps({"amount": 4200}), ex=60)
    await stack.start(VARS)
    report = await stack.call(duration_s=None, uuid=call_id)
    assert identify(report.audio)[0] == "4200"
    heard = nonzero(frames_of(report.audio))
    goodbye = nonzero(await stack.fragment("goodbye"))
    assert heard[-len(goodbye):] == goodbye
    assert heard[: -len(goodbye)] == nonzero(
        expected_frames("4200", stack.settings.tts.output_format, stack.settings.cache.loudness_target)
    )
    assert stack.emulator.stats.texts == {"4200": 1}


async def test_defaults_apply_without_call_variables(stack):
    await stack.start(AMOUNT)
    report = await stack.call(duration_s=None)
    assert identify(report.audio) == ["12500"]


# j. -----------------------------------------------------------------------------------------------------

async def test_serve_refuses_an_invalid_dialogue_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('start = "greeting"\n[nodes.greeting]\nplay = [ { static = "hello" } ]\nnext = "nowhere"\n')
    status, err = await run_serve("--bridge-port", "0", "--dialogue-file", str(bad))
    assert status == 2
    assert "greeting" in err and "nowhere" in err


@pytest.mark.slow
async def test_serve_plays_the_sample_dialogue_from_a_real_process(stack):
    """`voice-bridge serve` as operators run it: settings from flags, the bundled sample dialogue."""
    async with ServeProcess(
            "--redis-url", stack.settings.cache.redis_url, "--elevenlabs-base-url", stack.emulator.url,
            "--elevenlabs-api-key", stack.settings.tts.api_key.get_secret_value(),
            "--bridge-shutdown-grace", "0") as serve:
        report = await place_call("127.0.0.1", serve.port, duration_s=None, dtmf=[(9.0, "0")], keep_audio=True,
                                  max_wait_s=30)
        status = await serve.stop(15)
    assert report.hangup == "server"
    assert "12500" in identify(report.audio)
    heard = nonzero(frames_of(report.audio))
    hello = nonzero(await stack.fragment("hello"))
    assert heard[: len(hello)] == hello
    goodbye = nonzero(await stack.fragment("goodbye"))
    assert heard[-len(goodbye):] == goodbye
    assert status == 0
