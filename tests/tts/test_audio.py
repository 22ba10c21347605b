"""voice/audio.py: every provider format to 8 kHz frames, streaming equals whole, framing, WAV reading."""

from __future__ import annotations

import math
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.audio import (
    FRAME_BYTES,
    AudioFormatError,
    Framer,
    FrameStream,
    Resampler,
    SampleAligner,
    encode_g711,
    read_wav,
    rms,
    sample_width,
    stream_decoder,
    to_frames,
    write_wav,
)
from voice.config import OUTPUT_FORMATS, PCM_RATES

FORMATS = list(OUTPUT_FORMATS)


def sine(freq: float, rate: int, seconds: float, amplitude: int = 10000) -> bytes:
    n = int(rate * seconds)
    return array("h", (int(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))).tobytes()


def provider_audio(output_format: str, freq: float, seconds: float) -> bytes:
    """A tone as the provider would send it in `output_format`."""
    if output_format in PCM_RATES:
        return sine(freq, PCM_RATES[output_format], seconds)
    return encode_g711(sine(freq, 8000, seconds), output_format[:4])


def power_at(pcm: bytes, freq: float, rate: int = 8000) -> float:
    samples = array("h")
    samples.frombytes(pcm)
    w = 2 * math.pi * freq / rate
    re = sum(s * math.cos(w * i) for i, s in enumerate(samples))
    im = sum(s * math.sin(w * i) for i, s in enumerate(samples))
    return (re * re + im * im) / max(1, len(samples)) ** 2


def convert_in_chunks(output_format: str, data: bytes, size: int) -> list[bytes]:
    stream = FrameStream(output_format)
    frames: list[bytes] = []
    for i in range(0, len(data), size):
        frames += stream.feed(data[i : i + size])
    return frames + stream.flush()


@pytest.mark.parametrize("output_format", FORMATS)
def test_every_format_becomes_8k_frames_of_the_same_sound(output_format):
    seconds = 0.5
    frames = convert_in_chunks(output_format, provider_audio(output_format, 1000, seconds), 999)
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert len(frames) == pytest.approx(seconds * 50, abs=1)  # 20 ms frames: the duration is kept
    pcm = b"".join(frames[2:-2])  # away from the resampler's start-up and the padded end
    # still a 1 kHz tone at about the same level
    assert power_at(pcm, 1000) > 50 * power_at(pcm, 600)
    assert power_at(pcm, 1000) > 50 * power_at(pcm, 1500)
    assert rms(pcm) == pytest.approx(10000 / math.sqrt(2), rel=0.1)


@pytest.mark.parametrize("output_format", ["pcm_16000", "pcm_22050", "pcm_44100"])
def test_resampling_keeps_speech_band_and_drops_the_rate(output_format):
    rate = PCM_RATES[output_format]
    data = sine(3000, rate, 1.0)
    out = b"".join(convert_in_chunks(output_format, data, 4096))
    assert len(out) == pytest.approx(16000, abs=FRAME_BYTES)  # 1 s at 8 kHz, 2 bytes a sample
    assert power_at(out[640:-640], 3000) > 20 * power_at(out[640:-640], 2000)


@settings(max_examples=150, deadline=None)
@given(
    output_format=st.sampled_from(FORMATS),
    data=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_streaming_equals_whole_for_any_split(output_format, data, cuts):
    whole = FrameStream(output_format)
    expected = whole.feed(data) + whole.flush()
    stream = FrameStream(output_format)
    got: list[bytes] = []
    last = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        got += stream.feed(data[last:cut])
        last = cut
    got += stream.feed(data[last:]) + stream.flush()
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(
    output_format=st.sampled_from(FORMATS),
    sizes=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=10),
)
def test_sample_aligner_passes_whole_samples_and_loses_nothing_but_a_dangling_byte(output_format, sizes):
    data = bytes(range(256)) * 30
    aligner = SampleAligner(output_format)
    width = sample_width(output_format)
    out = []
    pos = 0
    for size in sizes:
        piece = aligner.feed(data[pos : pos + size])
        assert len(piece) % width == 0
        out.append(piece)
        pos += size
    total = min(pos, len(data))
    assert b"".join(out) == data[: total - total % width]


def test_framer_carries_the_remainder_and_pads_only_at_the_end():
    framer = Framer()
    assert framer.feed(b"\x01" * 100) == []
    frames = framer.feed(b"\x02" * 600)
    assert frames == [b"\x01" * 100 + b"\x02" * 220, b"\x02" * 320]
    assert framer.flush() == [b"\x02" * 60 + b"\x00" * 260]
    assert framer.flush() == []
    assert to_frames(b"\x05" * 330) == [b"\x05" * 320, b"\x05" * 10 + b"\x00" * 310]
    with pytest.raises(ValueError, match="even"):
        Framer(321)


def test_resampler_carries_a_split_sample():
    data = sine(500, 16000, 0.1)
    whole = Resampler(16000).feed(data)
    split = Resampler(16000)
    assert split.feed(data[:101]) + split.feed(data[101:]) == whole


def test_g711_round_trip_is_close():
    pcm = sine(700, 8000, 0.2)
    for law in ("ulaw", "alaw"):
        back = b"".join(convert_in_chunks(f"{law}_8000", encode_g711(pcm, law), 77))[: len(pcm)]
        error = rms(bytes(array("h", (a - b for a, b in zip(array("h", pcm), array("h", back)))).tobytes()))
        assert error < rms(pcm) * 0.05
    with pytest.raises(AudioFormatError):
        encode_g711(pcm, "mulaw")


@pytest.mark.parametrize("bad", ["mp3_44100_128", "pcm_11025", "", "PCM_16000"])
def test_unknown_format_is_refused_by_name(bad):
    with pytest.raises(AudioFormatError, match="unsupported output format"):
        stream_decoder(bad)
    with pytest.raises(AudioFormatError):
        FrameStream(bad)


def test_read_wav_converts_to_8k_mono(tmp_path):
    path = tmp_path / "tone.wav"
    write_wav(path, sine(1000, 16000, 0.5), rate=16000)
    wav = read_wav(path)
    assert (wav.source_rate, wav.source_width, wav.source_channels) == (16000, 2, 1)
    assert wav.duration_s == pytest.approx(0.5, abs=0.01)
    assert power_at(wav.pcm[:4000], 1000) > 50 * power_at(wav.pcm[:4000], 600)


@pytest.mark.parametrize(
    "content, problem",
    [(None, "no such file"), (b"", "empty file"), (b"RIFF\x24\x00\x00\x00WAVEfmt ", "truncated"),
     ("cut", "truncated"), (b"RIFF\x00\x00\x00\x00WAVEjunk", "WAV"),
     (b"hello world, not audio at all", "not a usable WAV")],
)
def test_read_wav_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.wav"
    if content == "cut":  # a real WAV header cut inside its fmt chunk
        write_wav(path, b"\x01\x02" * 100)
        path.write_bytes(path.read_bytes()[:30])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioFormatError) as info:
        read_wav(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_read_wav_refuses_a_wav_without_audio(tmp_path):
    path = tmp_path / "empty.wav"
    write_wav(path, b"")
    with pytest.raises(AudioFormatError, match="contains no audio"):
        read_wav(path)
