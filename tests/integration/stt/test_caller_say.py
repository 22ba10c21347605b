"""`voice-bridge call --say TEXT@S`: the simulated caller speaks tone-coded text at that time, which the STT
emulator (and `identify`) read back exactly; a real AudioSocket TCP listener receives it."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from bridge.protocol import Decoder, Kind
from bridge.sim.caller import configure_parser, parse_say, place_call
from voice.emulators.stt import ToneListener
from voice.emulators.tone_code import identify


async def test_said_text_arrives_at_its_time_and_reads_back():
    frames: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        while data := await reader.read(65536):
            for kind, payload in decoder.feed(data):
                if kind == Kind.AUDIO:
                    frames.append(payload)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        report = await place_call("127.0.0.1", port, duration_s=2.5, say=[(0.4, "да"), (1.2, "нет, спасибо")])
    assert report.hangup == "caller"
    audio = b"".join(frames)
    assert identify(audio) == ["да", "нет, спасибо"]
    first_sound = next(i for i, f in enumerate(frames) if any(f))
    assert first_sound == 20  # 0.4 s at 20 ms a frame
    listener = ToneListener()
    listener.feed(audio)
    assert listener.commit() == "да нет, спасибо"
    # the end of each text as sent (benchmarks time the caller's end of speech from it): its last frame
    lasts = [i for i in range(1, len(frames)) if any(frames[i - 1]) and not any(frames[i])]
    last_frames = [lasts[0] - 1, len(frames) - 1 - next(i for i, f in enumerate(reversed(frames)) if any(f))]
    assert len(report.said_ms) == 2 and report.uuid_at > 0
    for said, index in zip(report.said_ms, last_frames, strict=True):
        assert index * 20 <= said < index * 20 + 50  # the ticker's phase and lateness, not the schedule's


def test_say_option_parses_and_names_bad_items():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--say", "да@2.0", "--say", "a@b@1"])
    assert args.say == [(2.0, "да"), (1.0, "a@b")]
    for bad in ("да", "да@x", "@1", "да@-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="TEXT@SECONDS"):
            parse_say(bad)


@pytest.mark.parametrize("provider", ["elevenlabs", "openai"])
async def test_said_text_is_transcribed_through_a_real_audiosocket_leg(emulators, provider):
    """caller --say -> TCP AudioSocket -> recognizer fed frame by frame -> emulator -> the same text."""
    from voice.config import TTSConfig
    from voice.http import aclose_shared_client
    from voice.stt import STTConfig, create_recognizer
    from voice.stt.events import FinalTranscript

    stt = STTConfig(stt_provider=provider, stt_openai_base_url=f"{emulators.url}/v1", stt_openai_api_key=emulators.key)
    recognizer = create_recognizer(stt, TTSConfig(api_key=emulators.key, base_url=emulators.url))
    await recognizer.start()
    finals: list[str] = []

    async def read() -> None:
        async for event in recognizer.events():
            if isinstance(event, FinalTranscript):
                finals.append(event.text)

    reader = asyncio.create_task(read())

    async def handle(stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        while data := await stream.read(65536):
            for kind, payload in decoder.feed(data):
                if kind == Kind.AUDIO:
                    recognizer.feed(payload)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        async with server:
            await place_call("127.0.0.1", server.sockets[0].getsockname()[1], duration_s=3.6,
                             say=[(0.3, "да"), (1.5, "позовите оператора")])
            async with asyncio.timeout(5):
                while len(finals) < 2:
                    await asyncio.sleep(0.02)
    finally:
        await recognizer.close()
        await reader
        await aclose_shared_client()
    assert finals == ["да", "позовите оператора"]
