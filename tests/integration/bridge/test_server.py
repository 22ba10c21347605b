"""The server with the simulated caller over real loopback sockets: pacing, the Call API, hang-ups, shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from structlog.testing import capture_logs

from bridge.call import Call, CallEnded, DtmfEvent, HangupEvent
from bridge.protocol import FRAME_BYTES, SILENCE_PAYLOAD, Decoder, Kind, encode
from bridge.server import tone_frame, tone_handler
from bridge.sim.caller import place_call
from support.calls import normal_call, uuid_message, wait_until

TONE = tone_frame(400)


async def test_silence_starts_within_one_tick_of_the_uuid(start_server):
    server = await start_server()
    report = await place_call("127.0.0.1", server.port, duration_s=0.5, keep_audio=True)
    assert report.first_frame_ms is not None and report.first_frame_ms < 20 + 60  # one period, generous slack
    assert report.first_audio_ms is None  # silence only
    assert report.audio == SILENCE_PAYLOAD * report.frames
    assert report.hangup == "caller" and report.error is None


async def test_pacing_figures_within_bounds(start_server):
    server = await start_server(tone_handler(400))
    report = await place_call("127.0.0.1", server.port, duration_s=2.0)
    assert report.error is None
    # generous bounds (the machine is shared); the benchmark measures the real figures
    assert 0.9 <= report.realtime_ratio <= 1.1, report.realtime_ratio
    assert report.worst_burst_frames <= 4, report
    assert report.worst_gap_ms < 200, report
    assert 90 <= report.frames <= 102
    assert report.first_audio_ms is not None and report.first_audio_ms < 100


async def test_the_handler_gets_the_call_with_uuid_and_peer(start_server):
    seen: list[Call] = []

    async def handler(call: Call) -> None:
        seen.append(call)

    server = await start_server(handler)
    call_uuid = uuid.uuid4()
    await place_call("127.0.0.1", server.port, duration_s=0.2, uuid=call_uuid)
    (call,) = seen
    assert call.uuid == call_uuid
    assert call.peer.startswith("127.0.0.1:")
    assert call.sample_rate == 8000
    await wait_until(lambda: call.ended, what="call end")
    assert call.hangup_by in ("caller", "caller-reset")
    assert not server.calls and not server.connections


async def test_played_frames_arrive_in_order_and_a_short_last_frame_is_padded(start_server):
    frames = [bytes([i]) * FRAME_BYTES for i in range(1, 11)] + [b"\x07\x00" * 50]

    async def handler(call: Call) -> None:
        queued = await call.play_frames(frames)
        assert queued == len(frames)
        await call.drained()
        await call.hangup()

    server = await start_server(handler)
    report = await place_call("127.0.0.1", server.port, duration_s=None, keep_audio=True, max_wait_s=5)
    assert report.hangup == "server" and report.received_hangup
    speech = report.audio.strip(b"\x00")
    expected = b"".join(frames[:-1]) + b"\x07\x00" * 50
    assert speech == expected.strip(b"\x00")
    # the padded frame is a whole 320-byte frame: the stream is frame-aligned
    assert len(report.audio) % FRAME_BYTES == 0 and report.bytes == report.frames * FRAME_BYTES


async def test_drained_waits_for_the_clock(start_server):
    timings: dict[str, float] = {}

    async def handler(call: Call) -> None:
        t = time.monotonic()
        await call.play_frames([TONE] * 15)
        await call.drained()
        timings["drained_after_s"] = time.monotonic() - t
        timings["sent"] = call.speech_frames_sent

    server = await start_server(handler)
    await place_call("127.0.0.1", server.port, duration_s=0.6)
    # 15 frames at 20 ms each take about 0.28 s; even a clock catching up sends no more than one per 10 ms
    assert 0.14 <= timings["drained_after_s"] < 2.0, timings
    assert timings["sent"] == 15


async def test_play_waits_while_the_queue_is_full(start_server):
    depths: list[int] = []

    async def handler(call: Call) -> None:
        for _ in range(20):
            await call.play(TONE)
            depths.append(call.queued_frames)

    server = await start_server(handler, queue_frames=3)
    await place_call("127.0.0.1", server.port, duration_s=0.6)
    assert len(depths) == 20 and max(depths) <= 3


async def test_clear_audio_drops_what_is_queued(start_server):
    dropped: list[int] = []

    async def handler(call: Call) -> None:
        for _ in range(4):
            await call.play(TONE)  # room in the queue: no wait, so the clock has not run yet
        dropped.append(call.clear_audio())

    server = await start_server(handler, queue_frames=4)
    report = await place_call("127.0.0.1", server.port, duration_s=0.4)
    assert dropped == [4]
    assert report.first_audio_ms is None  # the caller never heard the dropped frames


async def test_dtmf_digits_are_delivered_in_order(start_server):
    digits: list[str] = []

    async def handler(call: Call) -> None:
        while True:
            event = await call.events.get()
            if isinstance(event, DtmfEvent):
                digits.append(event.digit)

    server = await start_server(handler)
    report = await place_call("127.0.0.1", server.port, duration_s=1.2,
                              dtmf=[(0.1, "1"), (0.35, "2"), (0.6, "#"), (0.85, "A")])
    assert [d for _, d in report.dtmf_sent] == ["1", "2", "#", "A"]
    await wait_until(lambda: len(digits) == 4, 2, "digits")
    assert digits == ["1", "2", "#", "A"]


async def test_caller_hangup_cancels_the_calls_tasks(start_server):
    state: dict[str, object] = {}

    async def handler(call: Call) -> None:
        state["call"] = call
        state["helper"] = call.start_task(asyncio.sleep(3600), name="helper")
        state["handler"] = asyncio.current_task()
        await asyncio.sleep(3600)

    server = await start_server(handler)
    await place_call("127.0.0.1", server.port, duration_s=0.3)
    await wait_until(lambda: "call" in state and state["call"].hung_up.is_set(), 3, "hang-up")
    call = state["call"]
    event = call.events.get_nowait()  # for watchers outside the call's own task tree
    assert isinstance(event, HangupEvent) and event.by in ("caller", "caller-reset")
    for name in ("helper", "handler"):
        task = state[name]
        await wait_until(task.done, 2, f"{name} task end")
        assert task.cancelled(), name
    assert not call.tasks and not server.calls


async def test_hangup_message_from_the_caller_ends_the_call(start_server):
    calls: list[Call] = []

    async def handler(call: Call) -> None:
        calls.append(call)
        await asyncio.sleep(3600)

    server = await start_server(handler)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(uuid_message())
    await wait_until(lambda: bool(calls), what="call")
    writer.write(encode(Kind.HANGUP))
    await wait_until(lambda: calls[0].ended, what="hang-up")
    assert calls[0].hangup_by == "caller-0x00"
    assert not calls[0].tasks  # the handler was cancelled
    writer.close()


async def test_server_hangup_sends_00_00_00_then_closes(start_server):
    async def handler(call: Call) -> None:
        await asyncio.sleep(0.1)
        await call.hangup()
        with pytest.raises(CallEnded):
            await call.play(TONE)

    server = await start_server(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(uuid_message())
    data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    messages = Decoder().feed(data)
    assert messages[-1] == (Kind.HANGUP, b"")
    assert all(m.kind == Kind.AUDIO for m in messages[:-1]) and len(messages) >= 3
    assert data.endswith(b"\x00\x00\x00")
    writer.close()


async def test_a_failing_handler_hangs_up_its_call_only(start_server):
    async def handler(call: Call) -> None:
        if call.uuid.int % 2 == 0:
            raise RuntimeError("handler bug")
        await asyncio.sleep(3600)

    server = await start_server(handler)
    bad_uuid = uuid.UUID(int=2)
    good_uuid = uuid.UUID(int=3)
    with capture_logs() as logs:
        bad, good = await asyncio.gather(
            place_call("127.0.0.1", server.port, duration_s=None, uuid=bad_uuid, max_wait_s=5),
            place_call("127.0.0.1", server.port, duration_s=0.5, uuid=good_uuid),
        )
    assert bad.hangup == "server" and bad.received_hangup
    assert good.hangup == "caller" and good.frames >= 15
    assert any(e["event"] == "call_task_failed" and e.get("call") == str(bad_uuid) for e in logs)


async def test_inbound_audio_reaches_on_audio_with_its_rate(start_server):
    got: list[tuple[int, int]] = []

    async def handler(call: Call) -> None:
        call.on_audio = lambda payload, rate: got.append((len(payload), rate))

    server = await start_server(handler)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(uuid_message())
    await asyncio.sleep(0.05)
    writer.write(encode(Kind.AUDIO, bytes(320)) + encode(Kind.AUDIO_16K, bytes(640)) + encode(Kind.AUDIO, bytes(6)))
    await wait_until(lambda: len(got) == 3, what="three inbound frames")
    assert got == [(320, 8000), (640, 16000), (6, 8000)]
    writer.close()


async def test_caller_speech_is_heard_from_its_start_time(start_server):
    loud_at: list[float] = []

    async def handler(call: Call) -> None:
        t0 = time.monotonic()

        def on_audio(payload: bytes, rate: int) -> None:
            if not loud_at and payload.strip(b"\x00"):
                loud_at.append(time.monotonic() - t0)

        call.on_audio = on_audio

    server = await start_server(handler)
    await place_call("127.0.0.1", server.port, duration_s=0.8, speech_at=0.4, speech_s=0.2)
    assert loud_at and 0.3 <= loud_at[0] <= 0.8, loud_at


async def test_mulaw_input_is_detected_and_reported_once(start_server):
    server = await start_server()

    async def send(frame_bytes: int) -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(uuid_message())
        start = time.monotonic()
        for k in range(14):  # μ-law: 160 bytes every 20 ms, still labelled 0x10
            await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
            writer.write(encode(Kind.AUDIO, b"\xff" * frame_bytes))
        writer.close()
        await asyncio.sleep(0.05)

    with capture_logs() as logs:
        await send(160)
        await send(320)  # proper slin8: no warning
    warnings = [e for e in logs if e["event"] == "inbound_looks_ulaw"]
    assert len(warnings) == 1, [e["event"] for e in logs]
    assert "c(slin)" in warnings[0]["hint"] and "call" in warnings[0]


async def test_max_calls_caps_concurrent_connections(start_server):
    server = await start_server(max_calls=2)
    with capture_logs() as logs:
        long_calls = [asyncio.create_task(place_call("127.0.0.1", server.port, duration_s=0.8)) for _ in range(2)]
        await wait_until(lambda: len(server.calls) == 2, what="two calls")
        extra = await place_call("127.0.0.1", server.port, duration_s=0.5, max_wait_s=3)
        done = await asyncio.gather(*long_calls)
    assert extra.frames == 0 and extra.hangup in ("server-eof", "server-reset")
    assert all(r.hangup == "caller" for r in done)
    assert server.rejected_total == 1
    assert any(e["event"] == "call_rejected" and e["reason"] == "call-limit" for e in logs)
    # the server sees a hang-up at the call's next tick (it reads paced calls on their tick): <= 20 ms later
    await wait_until(lambda: not server.calls, what="the long calls to end")
    await normal_call(server)  # room again


async def test_stop_lets_calls_finish_within_grace_then_hangs_up(start_server):
    server = await start_server()
    port = server.port
    short = asyncio.create_task(place_call("127.0.0.1", port, duration_s=0.3))
    long = asyncio.create_task(place_call("127.0.0.1", port, duration_s=None, max_wait_s=10))
    await wait_until(lambda: len(server.calls) == 2, what="two calls")
    t = time.monotonic()
    await server.stop(grace_s=0.6)
    elapsed = time.monotonic() - t
    short_report, long_report = await asyncio.gather(short, long)
    assert short_report.hangup == "caller"  # finished on its own during the grace period
    assert long_report.hangup == "server" and long_report.received_hangup
    assert 0.5 <= elapsed < 3, elapsed
    assert not server.connections
    with pytest.raises(OSError):  # no longer accepting
        await place_call("127.0.0.1", port, duration_s=0.1, connect_timeout_s=1)
