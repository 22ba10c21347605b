"""The simulated caller: what it sends (pacing, DTMF gaps, speech, WAV), its strictness, report and CLI."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
import wave

import pytest

from bridge.protocol import (
    AUDIO_HEADER_320,
    FRAME_BYTES,
    HANGUP_MESSAGE,
    SILENCE_FRAME,
    Decoder,
    Kind,
    encode,
)
from bridge.server import tone_frame, tone_handler
from bridge.sim.caller import pacing_figures, parse_dtmf, place_call, speech_noise_frames
from voice.audio import read_wav, write_wav


class RawServer:
    """A loopback server that records what the caller sends (with arrival times) and runs `behave`."""

    def __init__(self, behave=None) -> None:
        self.behave = behave
        self.messages: list[tuple[float, int, bytes]] = []
        self.t0 = 0.0
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.t0 = time.monotonic()
        decoder = Decoder(expect_uuid=True)
        behaviour = asyncio.create_task(self.behave(writer)) if self.behave else None
        try:
            while data := await reader.read(65536):
                now = time.monotonic() - self.t0
                self.messages += [(now, m.kind, m.payload) for m in decoder.feed(data)]
        except ConnectionError:
            pass
        finally:
            if behaviour:
                behaviour.cancel()
            writer.close()

    def audio(self) -> list[tuple[float, bytes]]:
        return [(t, p) for t, k, p in self.messages if k == Kind.AUDIO]


async def paced_silence(writer: asyncio.StreamWriter, frames: int = 1000) -> None:
    start = time.monotonic()
    for k in range(frames):
        await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        writer.write(SILENCE_FRAME)


async def test_caller_sends_uuid_then_paced_frames():
    call_uuid = uuid.uuid4()
    async with RawServer(paced_silence) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=1.0, uuid=call_uuid)
    assert srv.messages[0][1:] == (Kind.UUID, call_uuid.bytes)
    audio = srv.audio()
    assert 45 <= len(audio) <= 51 and report.frames_sent == len(audio)
    assert all(len(p) == FRAME_BYTES for _, p in audio)
    times = [t for t, _ in audio]
    ratio, burst, gap = pacing_figures(times)
    assert 0.9 <= ratio <= 1.1 and burst <= 4 and gap < 0.2  # generous: a shared machine
    assert report.hangup == "caller" and report.error is None and not report.received_hangup


async def test_dtmf_comes_after_an_audio_gap_like_asterisk():
    async with RawServer(paced_silence) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=1.0, dtmf=[(0.4, "7")], dtmf_ms=100)
    (dtmf,) = [(t, p) for t, k, p in srv.messages if k == Kind.DTMF]
    assert dtmf[1] == b"7" and 0.45 <= dtmf[0] <= 0.8
    assert report.dtmf_sent and report.dtmf_sent[0][1] == "7"
    audio_times = [t for t, _ in srv.audio()]
    before = max(t for t in audio_times if t < dtmf[0])
    after = min(t for t in audio_times if t >= dtmf[0])
    assert dtmf[0] - before >= 0.06  # no voice frames while the key was down (normal spacing: 0.02)
    assert after - dtmf[0] < 0.05  # audio resumes right after the digit


async def test_speech_starts_at_the_given_time_and_stops():
    async with RawServer(paced_silence) as srv:
        await place_call("127.0.0.1", srv.port, duration_s=1.0, speech_at=0.3, speech_s=0.2)
    loud = [t for t, p in srv.audio() if p.strip(b"\x00")]
    assert 9 <= len(loud) <= 11
    assert 0.25 <= loud[0] <= 0.6 and loud[-1] - loud[0] < 0.3
    assert speech_noise_frames()[0] != bytes(FRAME_BYTES)


async def test_a_wav_file_is_sent_once_then_silence(tmp_path):
    pcm = tone_frame(1000) * 10
    path = tmp_path / "caller.wav"
    write_wav(path, pcm)
    async with RawServer(paced_silence) as srv:
        await place_call("127.0.0.1", srv.port, duration_s=0.5, audio=str(path))
    payloads = [p for _, p in srv.audio()]
    assert b"".join(payloads[:10]) == pcm
    assert all(p == bytes(FRAME_BYTES) for p in payloads[10:])


async def test_recording_and_report_against_the_real_server(start_server, tmp_path):
    server = await start_server(tone_handler(400))
    path = tmp_path / "heard.wav"
    report = await place_call("127.0.0.1", server.port, duration_s=0.6, record=str(path))
    heard = read_wav(path)
    assert heard.pcm == report.audio and len(heard.pcm) == report.bytes
    assert heard.pcm.count(tone_frame(400)) >= report.frames - 2
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
    data = report.to_dict()
    for key in ("first_audio_ms", "realtime_ratio", "worst_burst_frames", "worst_gap_ms", "frames", "bytes",
                "hangup"):
        assert key in data
    assert "audio" not in data
    json.dumps(data)


async def send_then(messages: bytes, delay_s: float = 0.0, rest: bytes = b""):
    async def behave(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(messages)
        if rest:
            await asyncio.sleep(delay_s)
            writer.write(rest)
        await asyncio.sleep(10)

    return behave


@pytest.mark.parametrize("bad, words", [
    (encode(Kind.UUID, bytes(16)), "0x01"),
    (encode(Kind.DTMF, b"5"), "0x03"),
    (encode(Kind.ERROR, b""), "0xff"),
    (encode(0x42, b"x"), "0x42"),
    (encode(Kind.AUDIO, b""), "even, non-zero length"),
    (encode(Kind.AUDIO, b"abc"), "even, non-zero length"),
])
async def test_strict_caller_refuses_what_asterisk_refuses(bad, words):
    async with RawServer(await send_then(SILENCE_FRAME + bad)) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=2.0, max_wait_s=5)
    assert report.hangup == "protocol-error"
    assert words in report.error and report.duration_s < 1.5
    assert report.frames == 1


async def test_lenient_caller_ignores_unknown_kinds():
    async with RawServer(await send_then(SILENCE_FRAME + encode(0x42, b"x") + SILENCE_FRAME)) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=0.3, strict=False)
    assert report.hangup == "caller" and report.frames == 2


async def test_a_payload_late_behind_its_header_is_refused():
    async with RawServer(await send_then(AUDIO_HEADER_320, 0.03, bytes(FRAME_BYTES))) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=2.0, max_wait_s=5)
    assert report.hangup == "protocol-error" and "after its header" in report.error


async def test_a_payload_split_but_on_time_is_accepted():
    async with RawServer(await send_then(AUDIO_HEADER_320 + bytes(100), 0.0005, bytes(220))) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=0.3)
    assert report.hangup == "caller" and report.error is None and report.frames == 1


async def test_server_hangup_and_close_are_told_apart():
    async with RawServer(await send_then(SILENCE_FRAME + HANGUP_MESSAGE)) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=None, max_wait_s=5)
    assert report.hangup == "server" and report.received_hangup

    async def close_soon(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(SILENCE_FRAME)
        writer.close()

    async with RawServer(close_soon) as srv:
        report = await place_call("127.0.0.1", srv.port, duration_s=None, max_wait_s=5)
    assert report.hangup in ("server-eof", "server-reset") and not report.received_hangup


def test_pacing_figures():
    perfect = [k * 0.02 for k in range(50)]
    assert pacing_figures(perfect) == (pytest.approx(1.0), 1, pytest.approx(0.02))
    bursty = [0.0, 0.02, 0.04, 0.041, 0.042, 0.1]  # three inside 20 ms, then a 58 ms hole
    ratio, burst, gap = pacing_figures(bursty)
    assert burst == 3 and gap == pytest.approx(0.058) and ratio == pytest.approx(0.1 / 0.1)
    slow = [k * 0.021 for k in range(11)]
    assert pacing_figures(slow)[0] == pytest.approx(20 / 21)
    assert pacing_figures([]) == (None, 0, None)


def test_parse_dtmf():
    assert parse_dtmf("1.5:5, 3:#,4:A") == [(1.5, "5"), (3.0, "#"), (4.0, "A")]
    for bad in ("5", "x:1", "1:55", "1:E", "-1:5"):
        with pytest.raises(Exception, match="bad DTMF item"):
            parse_dtmf(bad)


async def call_cli(*args: str) -> tuple[int, str, str]:
    """`python -m bridge call ARGS` in a subprocess: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_prints_a_json_report_and_records(start_server, tmp_path):
    server = await start_server(tone_handler(400))
    path = tmp_path / "heard.wav"
    status, out, err = await call_cli("--port", str(server.port), "--duration", "0.5", "--dtmf", "0.2:9",
                                      "--record", str(path), "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["hangup"] == "caller" and report["frames"] >= 15
    assert report["first_audio_ms"] is not None and report["dtmf_sent"][0][1] == "9"
    assert len(read_wav(path).pcm) == report["bytes"]


async def test_cli_json_reports_a_refused_connection_as_json(start_server, unused_port):
    server = await start_server(tone_handler(400))
    (_, placed, _), (status, out, err) = await asyncio.gather(
        call_cli("--port", str(server.port), "--duration", "0.1", "--json"),
        call_cli("--port", str(unused_port), "--uuid", "0b4e8a5c-1f0e-4c1e-9a6d-3c2b1a0f9e8d", "--json"))
    assert status == 1 and "cannot connect" in err and "Traceback" not in err
    report = json.loads(out)
    assert report["hangup"] == "not-placed" and f"127.0.0.1:{unused_port}" in report["error"]
    assert report["uuid"] == "0b4e8a5c-1f0e-4c1e-9a6d-3c2b1a0f9e8d" and report["frames"] == 0
    assert set(report) == set(json.loads(placed))  # the same keys as a placed call's report


async def test_cli_refuses_a_recording_it_could_not_write_before_calling(tmp_path, unused_port):
    missing = tmp_path / "no-such-folder" / "call.wav"
    results = await asyncio.gather(
        call_cli("--port", str(unused_port), "--record", str(missing)),
        call_cli("--port", str(unused_port), "--record", str(tmp_path)),
        call_cli("--port", str(unused_port), "--record", str(missing), "--json"))
    (status, _, err), (dir_status, _, dir_err), (json_status, out, _) = results
    assert status == 2 and f"the folder {missing.parent} does not exist" in err  # not "cannot connect"
    assert dir_status == 2 and "is a folder" in dir_err
    assert json_status == 2 and "does not exist" in json.loads(out)["error"]
    assert all("Traceback" not in err for _, _, err in results)


@pytest.mark.parametrize("args, words", [
    (["--uuid", "not-a-uuid"], "argument --uuid: expected a UUID"),
    (["--duration", "-1"], "argument --duration: expected a number of seconds >= 0, got '-1'"),
    (["--duration", "soon"], "argument --duration: expected a number of seconds, got 'soon'"),
    (["--speech-at", "inf"], "argument --speech-at"),
    (["--audio", "/no/such.wav"], "--audio: /no/such.wav: no such file"),
])
async def test_cli_names_the_option_a_bad_value_was_given_to(args, words, unused_port):
    status, _, err = await call_cli("--port", str(unused_port), *args)
    assert status == 2 and words in err and "Traceback" not in err


def test_cli_help_shows_the_host_default(capsys):
    from bridge.cli import main

    with pytest.raises(SystemExit):
        main(["call", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "bridge address [env BRIDGE_HOST; default 127.0.0.1]" in text
    assert "[default 5]" in text


async def test_cli_names_a_bad_option_and_an_unreachable_bridge(unused_port):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", "--port", str(unused_port), "--duration", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and b"cannot connect" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", "--dtmf", "soon:5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"bad DTMF item 'soon:5'" in err
