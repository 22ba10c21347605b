"""The emulator speaks the ElevenLabs API: raw HTTP and WebSocket clients, control endpoints, separate process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosedError

from voice.audio import FrameStream
from voice.emulators.elevenlabs import (
    DEFAULT_API_KEY,
    DEFAULT_VOICES,
    EmulatorProcess,
    Knobs,
    expected_frames,
    identify,
    synthesize,
)

VOICE = DEFAULT_VOICES[0]
KEY = {"xi-api-key": DEFAULT_API_KEY}


def stream_url(emulator, voice=VOICE, **query) -> str:
    query = {"output_format": "pcm_16000", **query}
    return f"{emulator.url}/v1/text-to-speech/{voice}/stream?" + "&".join(f"{k}={v}" for k, v in query.items())


async def post(emulator, body, *, headers=KEY, voice=VOICE, **query) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(stream_url(emulator, voice, **query), json=body, headers=headers)


async def test_http_stream_is_chunked_raw_audio_of_the_text_with_elevenlabs_headers(emulator):
    response = await post(emulator, {"text": "Привет", "model_id": "eleven_flash_v2_5"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/pcm"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["character-cost"] == "6"
    assert len(response.headers["request-id"]) == 32
    for header in ("x-trace-id", "x-region", "current-concurrent-requests", "maximum-concurrent-requests"):
        assert header in response.headers
    assert response.content == synthesize("Привет", "pcm_16000")
    assert len(response.content) == 16000 * 2 * 6 * 60 // 1000  # 60 ms per character at 16 kHz
    assert emulator.stats.characters == 6 and emulator.stats.texts["Привет"] == 1


async def test_non_streaming_endpoint_returns_the_same_audio(emulator):
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{emulator.url}/v1/text-to-speech/{VOICE}?output_format=ulaw_8000", json={"text": "Hi"}, headers=KEY
        )
    assert response.status_code == 200 and response.headers["content-length"] == str(len(response.content))
    assert response.content == synthesize("Hi", "ulaw_8000")


async def read_chunk_sizes(emulator, body: dict) -> list[int]:
    """POST over a raw socket and parse the chunked encoding: the chunk sizes the server really sent."""
    reader, writer = await asyncio.open_connection(emulator.host, emulator.port)
    payload = json.dumps(body).encode()
    writer.write(
        f"POST /v1/text-to-speech/{VOICE}/stream?output_format=pcm_16000 HTTP/1.1\r\nHost: x\r\n"
        f"xi-api-key: {DEFAULT_API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"Connection: close\r\n\r\n".encode() + payload
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    sizes = []
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            break
        await reader.readexactly(size + 2)
        sizes.append(size)
    writer.close()
    return sizes


async def test_chunk_size_and_odd_chunks_knobs_shape_the_chunked_body(emulator):
    emulator.set_knobs(chunk_bytes=1000)
    assert set((await read_chunk_sizes(emulator, {"text": "Hello"}))[:-1]) == {1000}
    emulator.set_knobs(odd_chunks=True, chunk_bytes=100)
    sizes = await read_chunk_sizes(emulator, {"text": "Hello"})
    assert all(size % 2 == 1 for size in sizes[:-1]) and len(set(sizes)) > 3


@pytest.mark.parametrize(
    "headers, body, voice, query, status, detail",
    [
        ({"xi-api-key": "nope"}, {"text": "x"}, VOICE, {}, 401, {"status": "invalid_api_key"}),
        ({}, {"text": "x"}, VOICE, {}, 401, {"status": "invalid_api_key"}),
        (KEY, {"text": "x"}, "unknown", {}, 404, {"status": "voice_not_found"}),
        (KEY, {"text": "x"}, VOICE, {"output_format": "wav_1"}, 422, [("query", "output_format")]),
        (KEY, {"text": "x"}, VOICE, {"output_format": "mp3_44100_128"}, 422, {"status": "unsupported_output_format"}),
        (KEY, {"model_id": "m"}, VOICE, {}, 422, [("body", "text")]),
        (KEY, {"text": 5}, VOICE, {}, 422, [("body", "text")]),
        (
            KEY,
            {"text": "x"},
            VOICE,
            {"optimize_streaming_latency": "9"},
            422,
            [("query", "optimize_streaming_latency")],
        ),
        (KEY, {"text": "x", "voice_settings": {"speed": 2}}, VOICE, {}, 422, [("body", "voice_settings", "speed")]),
        (KEY, {"text": "   "}, VOICE, {}, 400, {"status": "empty_text"}),
    ],
)
async def test_http_validation_errors_have_elevenlabs_bodies(emulator, headers, body, voice, query, status, detail):
    response = await post(emulator, body, headers=headers, voice=voice, **query)
    assert response.status_code == status
    got = response.json()["detail"]
    if isinstance(detail, dict):
        assert got["status"] == detail["status"] and got["message"]
    else:  # FastAPI shape
        assert [tuple(item["loc"]) for item in got] == detail
        assert all("msg" in item and "type" in item for item in got)
    assert emulator.stats.characters == 0 and emulator.stats.http_status[status] == 1


async def test_invalid_json_body_is_a_fastapi_422(emulator):
    async with httpx.AsyncClient() as client:
        response = await client.post(
            stream_url(emulator), content=b"{not json", headers={**KEY, "content-type": "application/json"}
        )
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


async def test_quota_character_limit_and_tier_knobs(emulator):
    emulator.set_knobs(character_quota=5, max_characters=8, tier_gated_formats=["pcm_44100"])
    assert (await post(emulator, {"text": "abc"})).status_code == 200
    quota = await post(emulator, {"text": "abc"})
    assert quota.status_code == 401 and quota.json()["detail"]["status"] == "quota_exceeded"
    too_long = await post(emulator, {"text": "123456789"})
    assert too_long.status_code == 400 and too_long.json()["detail"]["status"] == "max_character_limit_exceeded"
    gated = await post(emulator, {"text": "a"}, output_format="pcm_44100")
    assert gated.status_code == 403


async def test_429_when_over_the_concurrency_limit(emulator):
    emulator.set_knobs(max_concurrent=2, realtime_factor=2.0, chunk_bytes=640)
    async with httpx.AsyncClient() as client:
        async def slow():
            async with client.stream("POST", stream_url(emulator), json={"text": "Long enough text"}, headers=KEY) as r:
                await r.aread()
                return r.status_code

        running = [asyncio.create_task(slow()) for _ in range(2)]
        await asyncio.sleep(0.2)
        extra = await client.post(stream_url(emulator), json={"text": "x"}, headers=KEY)
        assert extra.status_code == 429
        assert extra.json()["detail"]["status"] == "too_many_concurrent_requests"
        assert await asyncio.gather(*running) == [200, 200]


async def test_fail_status_applies_fail_count_times(emulator):
    emulator.set_knobs(fail_status=503, fail_count=2)
    statuses = [(await post(emulator, {"text": "x"})).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    emulator.set_knobs(fail_status=500, fail_count=-1, fail_detail="custom_trouble")
    response = await post(emulator, {"text": "x"})
    assert response.status_code == 500 and response.json()["detail"]["status"] == "custom_trouble"


async def test_abort_after_bytes_truncates_the_body(emulator):
    emulator.set_knobs(abort_after_bytes=777)
    received = bytearray()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", stream_url(emulator), json={"text": "Hello"}, headers=KEY) as r:
                async for chunk in r.aiter_raw():
                    received += chunk
    assert bytes(received) == synthesize("Hello", "pcm_16000")[:777]


async def test_time_to_first_byte_and_throughput_knobs(emulator):
    emulator.set_knobs(ttfb_ms=300, realtime_factor=4.0, chunk_bytes=3200)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient() as client:
        started = loop.time()
        async with client.stream("POST", stream_url(emulator), json={"text": "x" * 20}, headers=KEY) as r:
            first = None
            async for _ in r.aiter_raw():
                first = first or loop.time()
        ended = loop.time()
    assert first - started >= 0.28
    assert ended - first >= (20 * 0.06 / 4) * 0.8  # 1.2 s of audio at 4x real time, minus the first chunk


# --- WebSocket protocol -----------------------------------------------------------------------------------


def ws_url(emulator, **query) -> str:
    query = {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000", **query}
    return f"{emulator.ws_url}/v1/text-to-speech/{VOICE}/stream-input?" + "&".join(f"{k}={v}" for k, v in query.items())


async def drain(ws) -> tuple[bytes, list[dict], int]:
    """All audio, the messages, and the close code."""
    audio, messages = b"", []
    try:
        async for raw in ws:
            message = json.loads(raw)
            messages.append(message)
            if message.get("audio"):
                audio += base64.b64decode(message["audio"])
    except ConnectionClosedError:
        pass
    return audio, messages, ws.close_code


async def test_ws_protocol_text_end_of_input_is_final_and_1000(emulator):
    async with websockets.connect(ws_url(emulator, auto_mode="true"), additional_headers=KEY) as ws:
        await ws.send(json.dumps({"text": " ", "voice_settings": {"stability": 0.5}}))
        await ws.send(json.dumps({"text": "Hello "}))
        await ws.send(json.dumps({"text": " "}))  # keep-alive
        await ws.send(json.dumps({"text": "world. "}))
        await ws.send(json.dumps({"text": ""}))
        audio, messages, code = await drain(ws)
    assert audio == synthesize("Hello", "pcm_16000") + synthesize("world.", "pcm_16000")
    assert messages[-1]["isFinal"] is True and messages[-1]["audio"] is None
    assert all(m["isFinal"] is None for m in messages[:-1])
    assert code == 1000
    assert emulator.stats.ws_keepalives == 1 and emulator.stats.ws_generations == 2


async def test_ws_alignment_describes_each_chunk(emulator):
    emulator.set_knobs(chunk_bytes=1920 * 2)  # two characters per message at 16 kHz
    async with websockets.connect(ws_url(emulator, auto_mode="true"), additional_headers=KEY) as ws:
        await ws.send(json.dumps({"text": " "}))
        await ws.send(json.dumps({"text": "abcde"}))
        await ws.send(json.dumps({"text": ""}))
        _, messages, _ = await drain(ws)
    alignments = [m["alignment"] for m in messages if m.get("audio")]
    assert [a["chars"] for a in alignments] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(a["charStartTimesMs"] == [0, 60][: len(a["chars"])] for a in alignments)
    assert messages[0]["normalizedAlignment"] == alignments[0]


async def test_ws_without_auto_mode_buffers_until_flush_or_schedule(emulator):
    async with websockets.connect(ws_url(emulator), additional_headers=KEY) as ws:
        await ws.send(json.dumps({"text": " ", "generation_config": {"chunk_length_schedule": [10]}}))
        await ws.send(json.dumps({"text": "Hi "}))
        await ws.send(json.dumps({"text": "you ", "flush": True}))  # flush: generate now
        await ws.send(json.dumps({"text": "more words now "}))  # 15 >= 10: the schedule triggers
        await ws.send(json.dumps({"text": "end "}))
        await ws.send(json.dumps({"text": ""}))
        audio, _, code = await drain(ws)
    assert dict(emulator.stats.texts) == {"Hi you": 1, "more words now": 1, "end": 1}
    frames = FrameStream("pcm_16000")
    assert identify(b"".join(frames.feed(audio) + frames.flush())) == ["Hi youmore words nowend"]
    assert code == 1000


async def test_ws_key_in_the_first_message_is_accepted(emulator):
    async with websockets.connect(ws_url(emulator, auto_mode="true")) as ws:
        await ws.send(json.dumps({"text": " ", "xi_api_key": DEFAULT_API_KEY}))
        await ws.send(json.dumps({"text": "Hi"}))
        await ws.send(json.dumps({"text": ""}))
        audio, _, code = await drain(ws)
    assert audio == synthesize("Hi", "pcm_16000") and code == 1000


@pytest.mark.parametrize("where", ["header", "first message", "nowhere"])
async def test_ws_bad_key_closes_1008_after_the_handshake(emulator, where):
    headers = {"xi-api-key": "bad"} if where == "header" else {}
    async with websockets.connect(ws_url(emulator), additional_headers=headers) as ws:  # the handshake succeeds
        first = {"text": " "} | ({"xi_api_key": "bad"} if where == "first message" else {})
        with contextlib.suppress(ConnectionClosedError):
            await ws.send(json.dumps(first))
        _, messages, code = await drain(ws)
    assert code == 1008 and messages == [{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}]


@pytest.mark.parametrize(
    "messages, error",
    [
        (["not json"], "invalid_input_message"),
        ([{"no_text": 1}], "invalid_input_message"),
        ([{"text": " ", "voice_settings": {"stability": 0.5}}, {"text": "x", "voice_settings": {"stability": 0.9}}],
         "invalid_input_message"),
    ],
)
async def test_ws_bad_messages_get_an_error_frame_and_1008(emulator, messages, error):
    async with websockets.connect(ws_url(emulator), additional_headers=KEY) as ws:
        for message in messages:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
        _, received, code = await drain(ws)
    assert code == 1008 and received[-1]["error"] == error and received[-1]["code"] == 1008


async def test_ws_unknown_voice_or_format_is_refused_with_1008(emulator):
    url = ws_url(emulator).replace(VOICE, "nobody")
    async with websockets.connect(url, additional_headers=KEY) as ws:
        _, messages, code = await drain(ws)
    assert code == 1008 and messages[0]["error"] == "voice_not_found"
    async with websockets.connect(ws_url(emulator, output_format="mp3_44100_128"), additional_headers=KEY) as ws:
        _, messages, code = await drain(ws)
    assert code == 1008 and messages[0]["error"] == "unsupported_output_format"


async def test_ws_oversized_message_needs_a_large_max_size(emulator):
    emulator.set_knobs(oversized_message=True)
    async with websockets.connect(ws_url(emulator, auto_mode="true"), additional_headers=KEY) as ws:  # 1 MiB default
        await ws.send(json.dumps({"text": " "}))
        await ws.send(json.dumps({"text": "Hi"}))
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.sent.code == 1009
    async with websockets.connect(ws_url(emulator, auto_mode="true"), additional_headers=KEY, max_size=2**24) as ws:
        await ws.send(json.dumps({"text": " "}))
        await ws.send(json.dumps({"text": "Hi"}))
        await ws.send(json.dumps({"text": ""}))
        audio, messages, code = await drain(ws)
    assert len([m for m in messages if m.get("audio")]) == 1 and code == 1000
    assert audio.startswith(synthesize("Hi", "pcm_16000")) and set(audio[len(synthesize("Hi", "pcm_16000")):]) == {0}
    assert emulator.stats.ws_max_message_bytes > 2**20


# --- control endpoints and a separate process -------------------------------------------------------------


async def test_control_endpoints_set_knobs_read_stats_and_reset(emulator):
    async with httpx.AsyncClient(base_url=emulator.url) as client:
        response = await client.post("/_emulator/knobs", json={"ttfb_ms": 5, "odd_chunks": True})
        assert response.status_code == 200 and response.json()["odd_chunks"] is True
        assert emulator.knobs.ttfb_ms == 5.0
        bad = await client.post("/_emulator/knobs", json={"no_such_knob": 1})
        assert bad.status_code == 400 and "no_such_knob" in bad.json()["error"]
        wrong_type = await client.post("/_emulator/knobs", json={"odd_chunks": "yes"})
        assert wrong_type.status_code == 400 and "odd_chunks" in wrong_type.json()["error"]
        await client.post(
            f"/v1/text-to-speech/{VOICE}/stream?output_format=pcm_8000", json={"text": "abc"}, headers=KEY
        )
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["http_requests"] == 1 and stats["characters"] == 3 and stats["texts"] == {"abc": 1}
        assert (await client.post("/_emulator/reset")).json() == {"ok": True}
        assert (await client.get("/_emulator/stats")).json()["http_requests"] == 0
        assert (await client.get("/_emulator/knobs")).json() == Knobs().as_dict()


def test_emulator_runs_as_a_separate_process_driven_over_http():
    with (
        EmulatorProcess("--ttfb-ms", "1", "--api-key", "proc-key") as emu,
        httpx.Client(base_url=emu.url, timeout=5) as client,
    ):
        assert client.get("/_emulator/knobs").json()["ttfb_ms"] == 1.0
        client.post("/_emulator/knobs", json={"chunk_bytes": 100})
        response = client.post(f"/v1/text-to-speech/{VOICE}/stream?output_format=alaw_8000",
                               json={"text": "Проверка"}, headers={"xi-api-key": "proc-key"})
        assert response.status_code == 200
        frames = FrameStream("alaw_8000")
        assert frames.feed(response.content) + frames.flush() == expected_frames("Проверка", "alaw_8000")
        stats = client.get("/_emulator/stats").json()
        assert stats["texts"] == {"Проверка": 1} and stats["http_requests"] == 1
        assert client.post(f"/v1/text-to-speech/{VOICE}/stream", json={"text": "x"},
                           headers=KEY).status_code == 401  # only the configured key
    assert emu.process.returncode == 0  # SIGTERM ends it cleanly


def test_cli_registers_the_emulator_subcommand():
    from bridge.cli import build_parser

    args = build_parser(only="emulator").parse_args(
        ["emulator", "--port", "0", "--odd-chunks", "--knobs", '{"alignment": false}']
    )
    assert args.port == 0 and args.odd_chunks and callable(args._module.run)


async def test_timestamped_stream_is_json_lines_and_the_abort_knob_cuts_it(emulator):
    emulator.set_knobs(chunk_bytes=480)
    url = f"{emulator.url}/v1/text-to-speech/{VOICE}/stream/with-timestamps?output_format=ulaw_8000"
    async with httpx.AsyncClient() as client:
        response = await client.post(url, json={"text": "Да"}, headers=KEY)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.headers["transfer-encoding"] == "chunked"
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert [line["alignment"]["characters"] for line in lines] == [["Д"], ["а"]]  # 480 bytes a character
        assert lines[1]["alignment"]["character_start_times_seconds"] == [0.06]
        emulator.set_knobs(abort_after_bytes=1000)
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", url, json={"text": "Да да"}, headers=KEY) as r:
                async for chunk in r.aiter_raw():
                    received += chunk
    *whole, cut = bytes(received).split(b"\n")
    audio = b"".join(base64.b64decode(json.loads(line)["audio_base64"]) for line in whole)
    assert audio == synthesize("Да да", "ulaw_8000")[:960]  # two whole chunks, then half a line
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)


async def test_reads_check_the_key_but_not_the_failure_knobs(emulator):
    emulator.set_knobs(fail_status=503, fail_count=1)
    async with httpx.AsyncClient(base_url=emulator.url) as client:
        assert (await client.get("/v1/user", headers=KEY)).status_code == 200  # does not use up the failure
        missing = await client.get("/v1/models")
        assert missing.status_code == 401 and missing.json() == {
            "detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        assert (await post(emulator, {"text": "x"})).status_code == 503
        stats = (await client.get("/_emulator/stats")).json()
    assert stats["reads"] == {"GET /v1/user": 1, "GET /v1/models": 1} and stats["http_requests"] == 1


def test_cli_voices_add_the_configured_voice_and_help_names_the_base_url(monkeypatch):
    import subprocess
    import sys

    from bridge.cli import build_parser
    from voice.emulators.elevenlabs import _knobs_from_args

    monkeypatch.setenv("ELEVENLABS_VOICE_ID", "myVoice")
    args = build_parser(only="emulator").parse_args(["emulator"])
    assert _knobs_from_args(args).voices == [*DEFAULT_VOICES, "myVoice"]
    args = build_parser(only="emulator").parse_args(["emulator", "--voices", "a, b"])
    assert _knobs_from_args(args).voices == ["a", "b"]
    out = subprocess.run([sys.executable, "-m", "bridge", "emulator", "--help"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    text = " ".join(out.split())
    assert 'base_url="http://127.0.0.1:8765"' in text and "ELEVENLABS_BASE_URL" in text
    for shown in ("--ttfb-ms TTFB_MS delay before the first audio byte of each generation [default 0]",
                  "[default 4096]", "[env EMULATOR_PORT; default 8765]", "fail_status"):
        assert shown in text, shown


@pytest.mark.parametrize("args, words", [
    (["--ttfb-ms", "-1"], "argument --ttfb-ms: expected a number >= 0, got '-1'"),
    (["--chunk-bytes", "0"], "argument --chunk-bytes: expected a whole number >= 1, got '0'"),
    (["--max-concurrent", "many"], "argument --max-concurrent: expected a whole number, got 'many'"),
    (["--voices", " , "], "argument --voices: expected one or more voice ids"),
])
def test_cli_names_the_option_a_bad_knob_value_was_given_to(args, words, capsys):
    from bridge.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser(only="emulator").parse_args(["emulator", *args])
    assert info.value.code == 2 and words in capsys.readouterr().err
