"""WebSocketConnectionManager and TTSManager.start_llm_stream against the emulator over real WebSockets."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr
from websockets.exceptions import ConnectionClosedError
from websockets.protocol import State

from voice.audio import FrameStream
from voice.emulators.elevenlabs import expected_frames, identify
from voice.emulators.redis_server import free_port
from voice.tts_manager import (
    FLUSH,
    TTSAuthError,
    TTSConnectionError,
    TTSError,
    TTSInputTimeout,
    TTSManager,
    TTSServerError,
    TTSStreamError,
    WebSocketConnectionManager,
    iter_llm_audio,
)

PIECES = ["Двенадцать тысяч ", "пятьсот рублей. ", "Hello there. "]


def manager(config) -> TTSManager:
    return TTSManager(config, WebSocketConnectionManager(config))


async def speak(tts: TTSManager, pieces: list[str], *, end: bool = True) -> tuple[list[bytes], object]:
    """One turn: feed the pieces, collect audio until the terminal item; (chunks, terminal)."""
    text_queue, audio_queue = await tts.start_llm_stream()
    for piece in pieces:
        await text_queue.put(piece)
    if end:
        await text_queue.put(None)
    chunks = []
    while True:
        item = await asyncio.wait_for(audio_queue.get(), 10)
        if isinstance(item, bytes):
            chunks.append(item)
        else:
            return chunks, item


def frames_of(output_format: str, chunks: list[bytes]) -> list[bytes]:
    stream = FrameStream(output_format)
    return [f for c in chunks for f in stream.feed(c)] + stream.flush()


async def eventually(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_connect_builds_the_url_and_sends_the_first_message(emulator, tts_config):
    config = tts_config.model_copy(update=dict(voice_settings={"stability": 0.5, "similarity_boost": 0.8}))
    connections = WebSocketConnectionManager(config)
    websocket = await connections.connect()
    try:
        assert websocket.state is State.OPEN
        assert connections.websocket is websocket and connections.keep_alive_task is not None
        assert await connections.connect() is websocket  # already hot: the same connection
        await eventually(lambda: emulator.stats.ws_first_messages)
        query = emulator.stats.ws_queries[0]
        assert query["path"] == f"/v1/text-to-speech/{config.voice_id}/stream-input"
        assert query["query"] == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000", "auto_mode": "true"}
        assert query["xi_api_key_header"] == config.api_key.get_secret_value()
        assert emulator.stats.ws_first_messages[0] == {
            "text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8},
            "xi_api_key": config.api_key.get_secret_value(),
        }
        assert parse_qs(urlsplit(connections.url).query)["auto_mode"] == ["true"]
    finally:
        await connections.close()
    assert connections.keep_alive_task is None and connections.websocket is None
    assert websocket.state is State.CLOSED


@pytest.mark.parametrize("output_format", ["pcm_16000", "pcm_24000", "ulaw_8000"])
async def test_a_turn_speaks_every_piece_and_ends_with_none(emulator, tts_config, output_format):
    emulator.set_knobs(odd_chunks=True, chunk_bytes=333)
    tts = manager(tts_config.model_copy(update=dict(output_format=output_format)))
    try:
        chunks, terminal = await speak(tts, PIECES)
        assert terminal is None
        frames = frames_of(output_format, chunks)
        assert frames == expected_frames([p.strip() for p in PIECES], output_format)
        assert identify(b"".join(frames)) == ["".join(p.strip() for p in PIECES)]
        assert all(len(c) % (2 if output_format.startswith("pcm") else 1) == 0 for c in chunks)
        assert emulator.stats.ws_generations == 3
        await eventually(lambda: emulator.stats.ws_close_codes[1000] == 1)  # isFinal, then a normal close
    finally:
        await tts.aclose()


async def test_each_generation_is_stamped_when_its_text_arrived_and_its_first_audio_went_out(emulator, tts_config):
    """Benchmarks subtract the service's own time (TTFB knob and the emulator's CPU) from a turn: per
    generation, CLOCK_MONOTONIC stamps of the text's arrival and of its first audio message."""
    import time

    emulator.set_knobs(ttfb_ms=60)
    tts = manager(tts_config)
    try:
        before = time.monotonic()
        await speak(tts, PIECES)
        after = time.monotonic()
    finally:
        await tts.aclose()
    log = emulator.stats.snapshot()["ws_audio_log"]
    assert [entry["text"] for entry in log] == [p.strip() for p in PIECES]
    first = log[0]
    assert before <= first["text_at"] <= first["first_audio_at"] <= after
    assert first["first_audio_at"] - first["text_at"] >= 0.06  # the TTFB is the service's time
    assert all(e["text_at"] <= e["first_audio_at"] for e in log)
    assert log[1]["text_at"] > first["text_at"]  # its own message, not the first one's


async def test_the_spent_socket_is_replaced_in_the_background(emulator, tts_config):
    tts = manager(tts_config)
    try:
        first_socket = await tts.connection_manager.get_connection()
        _, terminal = await speak(tts, ["One. "])
        assert terminal is None
        # the turn ran on the socket opened before it: the emulator ended that one after isFinal
        assert emulator.stats.ws_generations == 1
        await eventually(lambda: emulator.stats.ws_close_codes[1000] == 1)
        await eventually(lambda: first_socket.state is State.CLOSED)
        await eventually(lambda: emulator.stats.ws_connections == 2)  # the next socket, opened ahead of time
        await eventually(lambda: tts.connection_manager.websocket is not None)
        hot = tts.connection_manager.websocket
        assert hot is not first_socket and hot.state is State.OPEN
        chunks, terminal = await speak(tts, ["Two. "])
        assert terminal is None and identify(b"".join(frames_of("pcm_16000", chunks))) == ["Two."]
        assert first_socket.state is State.CLOSED
        await eventually(lambda: emulator.stats.ws_connections == 3)
    finally:
        await tts.aclose()


async def test_keep_alive_holds_a_socket_past_the_inactivity_timeout(emulator, tts_config):
    emulator.set_knobs(ws_inactivity_timeout_s=1.0)
    tts = manager(tts_config.model_copy(update=dict(keepalive_s=0.3)))
    try:
        websocket = await tts.connection_manager.connect()
        await asyncio.sleep(2.2)
        assert websocket.state is State.OPEN
        assert emulator.stats.ws_keepalives >= 4
        chunks, terminal = await speak(tts, ["Still here. "])
        assert terminal is None and identify(b"".join(frames_of("pcm_16000", chunks))) == ["Still here."]
        await eventually(lambda: websocket.state is State.CLOSED)  # the turn spent the kept-alive socket
        assert emulator.stats.ws_close_codes[1008] == 0
    finally:
        await tts.aclose()


async def test_without_keep_alive_the_socket_dies_with_the_input_timeout_frame(emulator, tts_config):
    emulator.set_knobs(ws_inactivity_timeout_s=1.0)
    connections = WebSocketConnectionManager(tts_config.model_copy(update=dict(keepalive_s=60)))
    try:
        websocket = await connections.connect()
        frame = json.loads(await asyncio.wait_for(websocket.recv(), 5))
        assert frame["error"] == "input_timeout_exceeded" and frame["code"] == 1008
        assert "within the timeout of 1 seconds" in frame["message"]
        with pytest.raises(ConnectionClosedError) as info:
            await websocket.recv()
        assert info.value.rcvd.code == 1008
        assert emulator.stats.ws_keepalives == 0
        replacement = await connections.get_connection()  # a dead hot socket is replaced on demand
        assert replacement is not websocket and replacement.state is State.OPEN
    finally:
        await connections.close()


async def test_an_input_timeout_during_a_turn_is_reported(emulator, tts_config):
    emulator.set_knobs(ws_inactivity_timeout_s=0.5)
    tts = manager(tts_config.model_copy(update=dict(keepalive_s=60)))
    try:
        chunks, terminal = await speak(tts, ["Thinking... "], end=False)  # the producer never ends its input
        assert isinstance(terminal, TTSInputTimeout)
        assert terminal.code == "input_timeout_exceeded" and terminal.close_code == 1008
        assert identify(b"".join(frames_of("pcm_16000", chunks))) == ["Thinking..."]
    finally:
        await tts.aclose()


async def test_the_inactivity_timeout_query_parameter_is_honoured(emulator, tts_config):
    import websockets

    url = (f"{emulator.ws_url}/v1/text-to-speech/{tts_config.voice_id}/stream-input"
           "?output_format=pcm_16000&inactivity_timeout=1")
    async with websockets.connect(url, additional_headers={"xi-api-key": tts_config.api_key.get_secret_value()}) as ws:
        await ws.send(json.dumps({"text": " "}))
        started = asyncio.get_running_loop().time()
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["error"] == "input_timeout_exceeded"
        assert 0.8 < asyncio.get_running_loop().time() - started < 3


@pytest.mark.parametrize("after_bytes", [0, 4000])
async def test_a_1011_error_frame_becomes_a_server_error(emulator, tts_config, after_bytes):
    emulator.set_knobs(ws_error_code=1011, ws_error_after_bytes=after_bytes, chunk_bytes=1000)
    tts = manager(tts_config)
    try:
        chunks, terminal = await speak(tts, PIECES)
        assert isinstance(terminal, TTSServerError) and terminal.retryable
        assert terminal.close_code == 1011 and terminal.code == "internal_error"
        assert sum(map(len, chunks)) == after_bytes
    finally:
        await tts.aclose()


@pytest.mark.parametrize("frame", [True, False])
async def test_a_bad_key_is_an_auth_error_after_the_handshake(emulator, tts_config, frame):
    emulator.set_knobs(ws_auth_error_frame=frame)
    tts = manager(tts_config.model_copy(update=dict(api_key=SecretStr("wrong-key"))))
    try:
        try:  # the server closes at once: seen while sending the first message, or by the turn
            chunks, terminal = await speak(tts, ["Hello. "])
        except TTSAuthError as exc:
            chunks, terminal = [], exc
        assert isinstance(terminal, TTSAuthError) and not terminal.retryable
        assert terminal.close_code == 1008 and chunks == []
    finally:
        await tts.aclose()


async def test_a_message_over_1_mib_is_received_whole(emulator, tts_config):
    emulator.set_knobs(oversized_message=True)
    text = "Один длинный ответ, который приходит одним большим сообщением по веб-сокету. " * 2
    config = tts_config.model_copy(update=dict(output_format="pcm_48000"))
    tts = manager(config)
    try:
        chunks, terminal = await speak(tts, [text])
        assert terminal is None
        assert emulator.stats.ws_max_message_bytes > 2**20
        assert frames_of("pcm_48000", chunks) == expected_frames(text.strip(), "pcm_48000")
    finally:
        await tts.aclose()


async def test_a_dropped_connection_is_a_stream_error_1006(emulator, tts_config):
    emulator.set_knobs(abort_after_bytes=3000, chunk_bytes=1000)
    tts = manager(tts_config)
    try:
        chunks, terminal = await speak(tts, PIECES)
        assert isinstance(terminal, TTSStreamError) and terminal.close_code == 1006
        assert sum(map(len, chunks)) == 3000
    finally:
        await tts.aclose()


async def test_no_server_is_a_connection_error(tts_config):
    tts = manager(tts_config.model_copy(update=dict(base_url=f"http://127.0.0.1:{free_port()}")))
    with pytest.raises(TTSConnectionError):
        await tts.start_llm_stream()
    await tts.aclose()


async def test_a_refused_upgrade_is_classified_like_an_http_answer(emulator, tts_config):
    """503 at the upgrade: a server error, retryable; 401: a refused key, never retried (issue 12)."""
    emulator.set_knobs(fail_status=401, fail_count=1)
    tts = manager(tts_config)
    try:
        with pytest.raises(TTSAuthError) as refused:
            await tts.start_llm_stream()
        assert refused.value.http_status == 401 and not refused.value.retryable
    finally:
        await tts.aclose()
    emulator.set_knobs(fail_status=503, fail_count=1)
    tts = manager(tts_config)
    try:
        with pytest.raises(TTSServerError) as info:
            await tts.start_llm_stream()
        assert info.value.http_status == 503 and info.value.retryable
        chunks, terminal = await speak(tts, ["Retry works. "])  # the caller's retry gets a connection
        assert terminal is None and chunks
    finally:
        await tts.aclose()


async def test_stop_llm_stream_cuts_a_turn_short_and_the_next_turn_works(emulator, tts_config):
    emulator.set_knobs(realtime_factor=2.0, chunk_bytes=640)
    tts = manager(tts_config)
    try:
        text_queue, audio_queue = await tts.start_llm_stream()
        await text_queue.put("A rather long answer that the caller interrupts. ")
        await text_queue.put(None)
        first = await asyncio.wait_for(audio_queue.get(), 5)
        assert isinstance(first, bytes)
        turn = tts._turn
        await tts.stop_llm_stream()  # barge-in
        items = []
        while not audio_queue.empty():
            items.append(audio_queue.get_nowait())
        assert items[-1] is None and all(isinstance(i, bytes) for i in items[:-1])
        assert turn.send_task.done() and turn.receive_task.done()
        assert turn.websocket.state is State.CLOSED
        await eventually(lambda: emulator.stats.concurrent == 0)
        emulator.set_knobs(realtime_factor=0.0)
        chunks, terminal = await speak(tts, ["Yes? "])
        assert terminal is None and identify(b"".join(frames_of("pcm_16000", chunks))) == ["Yes?"]
    finally:
        await tts.aclose()


async def test_aclose_ends_every_task_and_socket(emulator, tts_config):
    tts = manager(tts_config)
    text_queue, _audio_queue = await tts.start_llm_stream()
    await text_queue.put("Unfinished ")
    turn = tts._turn
    await tts.aclose()
    assert turn.send_task.done() and turn.receive_task.done()
    assert turn.websocket.state is State.CLOSED
    assert tts.connection_manager.websocket is None and tts.connection_manager.keep_alive_task is None
    await asyncio.sleep(0.1)
    assert tts.connection_manager.websocket is None  # no replacement opened after the call ended


async def test_no_audio_after_the_end_of_input_within_the_read_timeout(emulator, tts_config):
    emulator.set_knobs(ttfb_ms=3000)
    tts = manager(tts_config.model_copy(update=dict(read_timeout_s=0.4)))
    try:
        _, terminal = await speak(tts, ["Slow. "])
        assert isinstance(terminal, TTSServerError) and "read timeout" not in str(terminal)
        assert "no audio" in str(terminal)
    finally:
        await tts.aclose()


async def test_an_open_turn_waits_for_text_past_the_read_timeout_then_the_end_of_input_starts_it(
        emulator, tts_config):
    """Before the input ends the server owes nothing (the receive loop waits on the end-of-input event, not a
    timer); the end of input then starts the read deadline, and the audio arrives within it."""
    tts = manager(tts_config.model_copy(update={"read_timeout_s": 0.3}))
    try:
        text_queue, audio_queue = await tts.start_llm_stream()
        await asyncio.sleep(0.9)  # three read timeouts without text: no error may be reported
        assert audio_queue.empty()
        await text_queue.put("Hello there. ")
        await text_queue.put(None)
        chunks = []
        while isinstance(item := await asyncio.wait_for(audio_queue.get(), 10), bytes):
            chunks.append(item)
        assert item is None and chunks
    finally:
        await tts.aclose()


async def test_the_text_queue_refuses_what_it_cannot_send(emulator, tts_config):
    tts = manager(tts_config)
    try:
        text_queue, _ = await tts.start_llm_stream()
        with pytest.raises(TypeError, match="bytes"):
            await text_queue.put(b"bytes")
        with pytest.raises(TypeError, match="int"):
            text_queue.put_nowait(5)
    finally:
        await tts.aclose()


async def test_empty_pieces_are_skipped_and_flush_is_sent(emulator, tts_config):
    tts = manager(tts_config)
    try:
        text_queue, audio_queue = await tts.start_llm_stream()
        for item in ("", "Hi. ", FLUSH, "", "Bye. ", None):
            await text_queue.put(item)
        chunks = [c async for c in iter_llm_audio(audio_queue)]
        assert identify(b"".join(frames_of("pcm_16000", chunks))) == ["Hi.Bye."]
        assert emulator.stats.ws_generations == 2  # "" did not end the stream early
    finally:
        await tts.aclose()


async def test_iter_llm_audio_raises_the_turns_error(emulator, tts_config):
    emulator.set_knobs(ws_error_code=1011)
    tts = manager(tts_config)
    try:
        text_queue, audio_queue = await tts.start_llm_stream()
        await text_queue.put("Hi. ")
        await text_queue.put(None)
        with pytest.raises(TTSError) as info:
            async for _ in iter_llm_audio(audio_queue):
                pass
        assert isinstance(info.value, TTSServerError)
    finally:
        await tts.aclose()


async def test_close_during_a_connect_leaves_no_socket_behind(emulator, tts_config):
    emulator.set_knobs(ttfb_ms=0)
    connections = WebSocketConnectionManager(tts_config)
    connecting = asyncio.create_task(connections.get_connection())
    await asyncio.sleep(0)  # the connect is under way
    await connections.close()
    with pytest.raises(TTSConnectionError, match="closed while connecting"):
        await connecting
    assert connections.websocket is None and connections.keep_alive_task is None
    await eventually(lambda: emulator.stats.ws_open == 0)  # the emulator saw the socket go
