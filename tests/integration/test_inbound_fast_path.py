"""The inbound fast path of a call over real loopback TCP: whole 20 ms slin messages skip the decoder once
the format is judged, and nothing changes for the listener, DTMF, or messages cut across reads; once the
call is paced the clock reads its socket on the call's tick (the event loop no longer polls it), and
`read_on_arrival` gives reading back to the loop; end of file and resets still end the call. The tests of
a served call run with the C tick and with the pure-Python outlet (`BRIDGE_NATIVE_TICK=false`)."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid

from bridge.call import Call, DtmfEvent
from bridge.config import BridgeConfig
from bridge.protocol import Kind, encode, encode_uuid
from bridge.server import AudioSocketServer

MESSAGE = 323


def audio(k: int) -> bytes:
    """A distinct 320-byte slin frame per k, so order and completeness can be checked."""
    return struct.pack("<160h", *([k % 30000] * 160))


async def start(native_tick: bool, **overrides: object) -> tuple[AudioSocketServer, list[Call],
                                                                  list[tuple[bytes, int]]]:
    calls: list[Call] = []
    heard: list[tuple[bytes, int]] = []

    async def handler(call: Call) -> None:
        calls.append(call)
        call.on_audio = lambda payload, rate: heard.append((bytes(payload), rate))
        await call.hung_up.wait()

    config = BridgeConfig().model_copy(update={"host": "127.0.0.1", "port": 0, "native_tick": native_tick,
                                               **overrides})
    server = AudioSocketServer(config, handler)
    await server.start()
    return server, calls, heard


async def judged(writer: asyncio.StreamWriter, calls: list[Call]) -> Call:
    """UUID, then ten frames at the real rate (the format is judged on them): the fast path is on after."""
    writer.write(encode_uuid(uuid.uuid4()))
    for k in range(10):
        writer.write(encode(Kind.AUDIO, audio(k)))
        await writer.drain()
        await asyncio.sleep(0.02)
    for _ in range(200):
        if calls and calls[0]._fast:
            return calls[0]
        await asyncio.sleep(0.01)
    raise AssertionError("the fast path never came on")


async def wait_for(predicate, what: str, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_fast_path_keeps_every_frame_dtmf_and_cut_messages(native_tick: bool) -> None:
    server, calls, heard = await start(native_tick)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        call = await judged(writer, calls)
        assert call._decoder.buffered == 0
        # one message per write (the hot case), then five in one write, then DTMF between frames,
        # then a message cut across two writes (the general path), then single messages again
        writer.write(encode(Kind.AUDIO, audio(10)))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"".join(encode(Kind.AUDIO, audio(k)) for k in range(11, 16)))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(encode(Kind.AUDIO, audio(16)) + encode(Kind.DTMF, b"5") + encode(Kind.AUDIO, audio(17)))
        await writer.drain()
        await asyncio.sleep(0.02)
        cut = encode(Kind.AUDIO, audio(18))
        writer.write(cut[:100])
        await writer.drain()
        await wait_for(lambda: call._decoder.buffered == 100, "the first part of the cut message")
        assert not call._fast  # the rest of a cut message must go through the decoder
        writer.write(cut[100:])
        await writer.drain()
        await asyncio.sleep(0.02)
        for k in range(19, 22):
            writer.write(encode(Kind.AUDIO, audio(k)))
            await writer.drain()
            await asyncio.sleep(0.02)
        await wait_for(lambda: call.frames_received == 22, "22 frames")
        # every frame from the moment the handler armed its listener (the first may come with the UUID)
        assert len(heard) >= 20
        assert [payload for payload, _ in heard] == [audio(k) for k in range(22 - len(heard), 22)]
        assert {rate for _, rate in heard} == {8000}
        assert call._fast  # back on after the general path had the cut message
        event = call.events.get_nowait()
        assert event == DtmfEvent("5")
        writer.close()
        await wait_for(lambda: call.ended, "the call to end")
        assert call.hangup_by in ("caller", "caller-reset")  # RST when our audio was left unread
    finally:
        await server.stop(0)


async def test_a_protocol_error_after_the_fast_path_still_ends_the_call(native_tick: bool) -> None:
    server, calls, _ = await start(native_tick)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        call = await judged(writer, calls)
        writer.write(encode(Kind.AUDIO, audio(1)) + encode(Kind.UUID, b"short"))  # a UUID must be 16 bytes
        await writer.drain()
        await wait_for(lambda: call.ended, "the call to end")
        assert call.hangup_by == "protocol-error"
        writer.close()
    finally:
        await server.stop(0)


async def test_a_paced_call_is_read_on_its_tick_and_hears_everything(native_tick: bool) -> None:
    server, calls, heard = await start(native_tick)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        call = await judged(writer, calls)
        await wait_for(lambda: call._tick_reads, "reads on the tick")
        assert not call._transport.is_reading()  # type: ignore[union-attr]  # the loop no longer polls it
        # audio at the real rate with a digit among it, then a burst bigger than one tick's read
        for k in range(10, 30):
            payload = encode(Kind.AUDIO, audio(k))
            if k == 15:
                payload += encode(Kind.DTMF, b"#")
            writer.write(payload)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"".join(encode(Kind.AUDIO, audio(k)) for k in range(30, 60)))  # 9,690 bytes at once
        await writer.drain()
        await wait_for(lambda: call.frames_received == 60, "every frame")
        assert call.events.get_nowait() == DtmfEvent("#")
        first = 60 - len(heard)
        assert len(heard) >= 45
        assert [payload for payload, _ in heard] == [audio(k) for k in range(first, 60)]
        assert call._tick_reads
        # end of file: the tick hands reading back to the loop, which ends the call the usual way
        writer.close()
        await wait_for(lambda: call.ended, "the call to end")
        assert call.hangup_by in ("caller", "caller-reset")
    finally:
        await server.stop(0)


async def test_nothing_is_written_after_the_callers_fin_and_ours_follows(native_tick: bool) -> None:
    # Asterisk closes the connection when the phone hangs up; a frame written after its FIN is answered with
    # a RST, and then our own FIN is never sent. Read on the tick, the end of file is read before the frame.
    server, calls, _ = await start(native_tick)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        call = await judged(writer, calls)
        await wait_for(lambda: call._tick_reads, "reads on the tick")
        await asyncio.sleep(0.1)
        while True:  # what the bridge wrote before our FIN
            try:
                await asyncio.wait_for(reader.read(65536), 0.005)
            except TimeoutError:
                break
        sent = call.frames_sent  # the bridge runs in this event loop: no tick between here and our FIN
        writer.write_eof()  # FIN (on loopback it is in the bridge's socket when this returns); we keep reading
        while await asyncio.wait_for(reader.read(65536), 2):
            pass  # frames written before our FIN; then b"": the bridge's FIN, not a reset
        await wait_for(lambda: call.ended, "the call to end")
        assert call.hangup_by == "caller"
        assert call.frames_sent == sent  # the tick read the end of file before writing
        writer.close()
    finally:
        await server.stop(0)


async def test_a_reset_while_read_on_the_tick_ends_the_call(native_tick: bool) -> None:
    server, calls, _ = await start(native_tick)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        call = await judged(writer, calls)
        await wait_for(lambda: call._tick_reads, "reads on the tick")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends a RST
        writer.transport.abort()
        await wait_for(lambda: call.ended, "the call to end")
        assert call.hangup_by in ("caller-reset", "caller")
        await wait_for(lambda: not server.connections, "the connection to close")
    finally:
        await server.stop(0)


async def test_read_on_arrival_gives_reading_back_to_the_loop_and_back(native_tick: bool) -> None:
    server, calls, heard = await start(native_tick)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        call = await judged(writer, calls)
        await wait_for(lambda: call._tick_reads, "reads on the tick")
        call.read_on_arrival(True)  # a recognizer's endpointing wants every frame at once
        assert not call._tick_reads and call._transport.is_reading()  # type: ignore[union-attr]
        writer.write(encode(Kind.AUDIO, audio(10)) + encode(Kind.DTMF, b"3"))
        await writer.drain()
        await wait_for(lambda: not call.events.empty(), "the digit")
        assert call.events.get_nowait() == DtmfEvent("3") and heard[-1][0] == audio(10)
        assert not call._tick_reads  # a paced, judged call stays read on arrival while asked to
        call.read_on_arrival(False)
        assert call._tick_reads and not call._transport.is_reading()  # type: ignore[union-attr]
        writer.write(encode(Kind.AUDIO, audio(11)))
        await writer.drain()
        await wait_for(lambda: heard[-1][0] == audio(11), "the frame read on the tick")
        writer.close()
        await wait_for(lambda: call.ended, "the call to end")
    finally:
        await server.stop(0)


def test_the_rest_of_a_cut_message_never_takes_the_fast_path() -> None:
    # A message cut after its header: the rest (320 payload bytes) plus whole messages plus a header is a
    # multiple of 323 bytes, and its first bytes are payload that happens to look like an audio header.
    # Taken as whole messages it would shift the stream; the decoder must read it.
    from bridge.sim.bench.micro import judged_call

    call = judged_call()
    heard: list[bytes] = []
    call.on_audio = lambda payload, rate: heard.append(bytes(payload))
    assert call._fast
    tricky = encode(Kind.AUDIO, b"\x10\x01\x40" + bytes(317))
    call.data_received(tricky[:3])
    assert not call._fast and call._decoder.buffered == 3
    call.data_received(tricky[3:] + encode(Kind.AUDIO, audio(1)) + encode(Kind.AUDIO, audio(2))[:3])
    assert heard == [b"\x10\x01\x40" + bytes(317), audio(1)]
    call.data_received(encode(Kind.AUDIO, audio(2))[3:])
    assert heard[-1] == audio(2) and call._fast
