"""Audio that sounds right, measured end to end (issue 14): a real server, Redis, the TTS emulator and a caller
on loopback TCP. What the caller hears is compared sample for sample, or measured (levels, sample steps)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import numpy as np
from structlog.testing import capture_logs

from bridge.protocol import Decoder, Kind, encode, encode_uuid
from support.stack import frames_of, nonzero, strip_silence
from voice.audio import SAMPLE_RATE, active_level_dbfs, encode_g711, write_wav
from voice.emulators.tone_code import synthesize_pcm
from voice.keys import static_key

ZERO = bytes(320)


def fragment_dialogue(name: str, *, barge_in: bool = False) -> str:
    return f"""
start = "one"
[nodes.one]
play = [ {{ static = "{name}" }} ]
{"barge_in = true" if barge_in else ""}
dtmf = {{ "1" = "pause" }}
timeout_s = 0.3
next = "bye"
[nodes.pause]
play = []
dtmf = {{ "9" = "bye" }}
timeout_s = 0.3
next = "bye"
[nodes.bye]
play = []
hangup = true
"""


def tone(freq: float, seconds: float, amplitude: float) -> bytes:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def samples_of(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


# item 3: any chunk_size_ms ---------------------------------------------------------------------------------


async def test_a_fragment_stored_in_any_chunk_size_is_heard_sample_for_sample_the_same(stack, tmp_path):
    path = tmp_path / "speech.wav"
    write_wav(path, synthesize_pcm("звонок", SAMPLE_RATE)[: -7 * 2])  # not a whole number of frames
    heard: dict[int, list[bytes]] = {}
    for chunk_ms in (10, 15, 20, 30, 60):
        loaded = await stack.cache.load_and_set_audio(static_key("speech"), str(path), chunk_size_ms=chunk_ms)
        assert loaded.stored and loaded.chunks == math.ceil(loaded.duration_s * 1000 / chunk_ms - 1e-9)
        await stack.start(fragment_dialogue("speech"))
        report = await stack.call(duration_s=None)
        assert report.hangup == "server", (chunk_ms, report)
        heard[chunk_ms] = strip_silence(frames_of(report.audio))
    reference = heard[20]
    assert len(reference) == 18  # 0.36 s - 7 samples: 18 frames, the last padded
    for chunk_ms, frames in heard.items():
        assert frames == reference, f"{chunk_ms} ms chunks are heard differently"


# item 6: one loudness ------------------------------------------------------------------------------------


async def test_a_fragment_and_a_synthesis_side_by_side_are_heard_at_one_level(stack, tmp_path):
    quiet = tmp_path / "your_cost.wav"  # recorded 20 dB quieter than the emulator speaks
    write_wav(quiet, (samples_of(synthesize_pcm("цена", SAMPLE_RATE)) // 10).astype("<i2").tobytes())
    raw_fragment = active_level_dbfs(quiet.read_bytes()[44:])
    raw_synthesis = active_level_dbfs(synthesize_pcm("12500", SAMPLE_RATE))
    assert raw_synthesis - raw_fragment > 15  # as recorded and as synthesized: far apart
    target = stack.settings.cache.loudness_target
    assert target == -20.0  # the default: levelling is on
    loaded = await stack.cache.load_and_set_audio(static_key("your_cost"), str(quiet))
    await stack.start("""
start = "cost"
[nodes.cost]
play = [ { static = "your_cost" }, { tts = "12500" } ]
hangup = true
""")
    report = await stack.call(duration_s=None)
    assert report.hangup == "server"
    sound = nonzero(frames_of(report.audio))
    fragment, synthesis = b"".join(sound[: loaded.chunks]), b"".join(sound[loaded.chunks :])
    fragment_level, synthesis_level = active_level_dbfs(fragment), active_level_dbfs(synthesis)
    print(f"as made: fragment {raw_fragment:.1f} dBFS, synthesis {raw_synthesis:.1f} dBFS; heard: fragment "
          f"{fragment_level:.2f} dBFS, synthesis {synthesis_level:.2f} dBFS (target {target})")
    assert fragment_level is not None and synthesis_level is not None
    assert abs(fragment_level - synthesis_level) <= 2
    assert abs(fragment_level - target) <= 1 and abs(synthesis_level - target) <= 1


# item 4: click-free cuts ---------------------------------------------------------------------------------


async def test_a_prompt_cut_by_a_digit_fades_out_instead_of_clicking(stack, tmp_path):
    path = tmp_path / "drone.wav"
    write_wav(path, tone(233, 3.0, 12000))  # low: small steps inside, a big jump if cut mid-wave; 4.66 periods a frame
    await stack.cache.load_and_set_audio(static_key("drone"), str(path))
    steps_at_cut = []
    inside = 0
    for at in (0.61, 0.83, 1.07):  # a few cut points: the waveform's phase at the cut differs each time
        await stack.start(fragment_dialogue("drone", barge_in=True))
        report = await stack.call(duration_s=None, dtmf=[(at, "1")])
        assert report.hangup == "server"
        assert stack.runtime.metrics.barge_ins.labels(by="dtmf")._value.get() == 1
        x = samples_of(report.audio)
        loud = np.flatnonzero(x)
        start, end = loud[0], loud[-1] + 1  # the prompt, from its first sample to the last one heard
        steps = np.abs(np.diff(x[start - 1 : end + 1]))
        inside = max(inside, int(steps[: -400].max()))  # the steps of the tone itself
        steps_at_cut.append(int(steps[-400:].max()))  # the last 50 ms: the cut, and the fade
        assert (end - start) / SAMPLE_RATE < 2.5  # it was cut, not played to the end
    print(f"largest sample step inside the tone {inside}, in the last 50 ms before silence {steps_at_cut}")
    assert max(steps_at_cut) <= inside  # no click: nothing at the cut is steeper than the tone itself


# item 5: μ-law labelled as slin ----------------------------------------------------------------------------


async def _mulaw_caller(port: int, seconds: float) -> bytes:
    """A channel without c(slin): faint line noise as μ-law in 160-byte 0x10 frames every 20 ms."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_uuid(uuid.uuid4()))
    noise = np.random.default_rng(7).normal(0, 40, int(SAMPLE_RATE * seconds)).astype("<i2").tobytes()
    mulaw = encode_g711(noise, "ulaw")
    decoder = Decoder()
    heard = bytearray()

    async def read() -> None:
        while data := await reader.read(65536):
            for kind, payload in decoder.feed(data):
                if kind == Kind.AUDIO:
                    heard.extend(payload)

    reading = asyncio.ensure_future(read())
    start = time.monotonic()
    for k in range(len(mulaw) // 160):
        await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        writer.write(encode(Kind.AUDIO, mulaw[k * 160 : (k + 1) * 160]))
    writer.close()
    await asyncio.wait_for(reading, 5)
    return bytes(heard)


async def test_mulaw_labelled_as_slin_is_decoded_and_line_noise_does_not_barge_in(stack, tmp_path):
    path = tmp_path / "greeting.wav"
    write_wav(path, tone(400, 1.0, 8000))
    loaded = await stack.cache.load_and_set_audio(static_key("greeting"), str(path))
    await stack.start(fragment_dialogue("greeting", barge_in=True))
    got: list[tuple[int, int, int]] = []
    with capture_logs() as logs:
        server = stack.server

        async def tap() -> None:  # a second listener on the call, next to the barge-in detector
            while not server.calls:
                await asyncio.sleep(0.005)
            call = next(iter(server.calls))
            inner = call.on_audio
            while inner is None:
                await asyncio.sleep(0.005)
                inner = call.on_audio

            def listen(payload: bytes, rate: int) -> None:
                got.append((len(payload), rate, int(np.sqrt(np.mean(samples_of(payload) ** 2)))))
                inner(payload, rate)

            call.on_audio = listen

        tapping = asyncio.ensure_future(tap())
        heard = await _mulaw_caller(stack.server.port, 1.6)
        tapping.cancel()
    assert stack.runtime.metrics.barge_ins.labels(by="speech")._value.get() == 0
    sound = [f for f in frames_of(heard) if f != ZERO]
    assert len(sound) >= loaded.chunks - 1, "the greeting was cut"  # the whole second of it was heard
    assert any(e["event"] == "inbound_looks_ulaw" for e in logs)
    assert got and all(n == 320 and rate == 8000 for n, rate, _ in got)  # decoded: 160 bytes -> 160 samples
    assert max(level for _, _, level in got) < 200  # faint noise, as it is (read as slin it is ~ 20000)
