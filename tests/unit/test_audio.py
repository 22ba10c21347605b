"""voice/audio.py: every provider format to 8 kHz frames, streaming equals whole, framing, WAV reading."""

from __future__ import annotations

import math
from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.audio import (
    FRAME_BYTES,
    AudioFormatError,
    Framer,
    FrameStream,
    Loudness,
    Resampler,
    SampleAligner,
    StreamLeveller,
    active_level_dbfs,
    audioop,
    encode_g711,
    read_wav,
    reframe,
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
        error = rms(
            bytes(array("h", (a - b for a, b in zip(array("h", pcm), array("h", back), strict=True))).tobytes())
        )
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


# --- band-limited resampling (issue 14): measured over tones ---------------------------------------------

RATES = [16000, 22050, 24000, 44100, 48000]
EDGE = 400  # 50 ms at 8 kHz left out at each end: where the tone starts and stops abruptly


def level_db(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)[EDGE:-EDGE]
    return 10 * np.log10(max(np.mean(samples * samples), 1e-12))


def tone_at(rate: int, freq: float, amplitude: float = 16000.0, seconds: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def converted(rate: int, pcm: bytes, chunk: int = 1234, realtime: bool = True) -> bytes:
    resampler = Resampler(rate, realtime=realtime)
    out = [resampler.feed(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    return b"".join(out) + resampler.flush()


MODES = pytest.mark.parametrize("realtime", [True, False], ids=["stream", "file"])


@MODES
@pytest.mark.parametrize("rate", RATES)
def test_the_telephone_band_passes_within_half_a_db(rate, realtime):
    reference = level_db(tone_at(8000, 1000))  # the same amplitude, no conversion
    gains = {}
    for freq in (300, 500, 1000, 2000, 3000, 3400):
        out = converted(rate, tone_at(rate, freq), realtime=realtime)
        assert len(out) == 8000  # 0.5 s at 8 kHz, 2 bytes a sample
        gains[freq] = level_db(out) - reference
    print(f"{rate} Hz in, passband gain dB: " + ", ".join(f"{f}: {g:+.3f}" for f, g in gains.items()))
    assert all(abs(g) <= 0.5 for g in gains.values()), gains


@MODES
@pytest.mark.parametrize("rate", RATES)
def test_everything_above_4200_hz_is_attenuated_by_50_db(rate, realtime):
    reference = level_db(tone_at(8000, 1000))
    worst = -999.0
    for freq in range(4200, rate // 2, 300 if rate <= 24000 else 1100):
        out = converted(rate, tone_at(rate, freq), realtime=realtime)
        worst = max(worst, level_db(out) - reference)
    print(f"{rate} Hz in: strongest alias of a tone above 4.2 kHz at {worst:.1f} dB")
    assert worst <= -50, worst


def test_audioop_ratecv_would_fail_the_alias_test():
    """The measurement can fail: the old converter lets a 6 kHz tone at 16 kHz through at full level."""
    data = tone_at(16000, 6000)
    old, _ = audioop.ratecv(data, 2, 1, 16000, 8000, None)
    assert level_db(old) - level_db(tone_at(8000, 1000)) > -3
    assert level_db(converted(16000, data)) - level_db(tone_at(8000, 1000)) < -50


@pytest.mark.parametrize("rate", RATES)
def test_a_stream_is_not_held_back(rate):
    """A stream's audio comes out with each chunk, all of it: a pause in the provider's stream (an LLM
    answer spoken phrase by phrase) leaves nothing of the phrase behind. A file may look ahead 2.7 ms."""
    for chunk in (tone_at(rate, 700, seconds=0.06), tone_at(rate, 900, seconds=0.12)):
        resampler = Resampler(rate)
        fed, expected = len(resampler.feed(chunk)), len(chunk) * 8000 // rate // 2 * 2
        if rate in (22050, 44100):  # no whole ratio: one sample more or less by rounding, never more held
            assert abs(fed - expected) <= 2, (fed, expected)
        else:
            assert fed == expected
        assert len(resampler.flush()) <= 2  # at most the rounding of a 22.05/44.1 kHz sample
    file = Resampler(rate, realtime=False)
    pcm = tone_at(rate, 700, seconds=0.2)
    out = file.feed(pcm)
    assert len(out) >= 2 * (1600 - 24) and len(out) + len(file.flush()) == 3200


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from(RATES),
    realtime=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=10),
)
def test_band_limited_conversion_chunked_equals_whole(rate, realtime, cuts):
    data = np.random.default_rng(len(cuts)).integers(-20000, 20000, 4500).astype("<i2").tobytes()
    whole = Resampler(rate, realtime=realtime)
    expected = whole.feed(data) + whole.flush()
    stream = Resampler(rate, realtime=realtime)
    got, last = b"", 0
    for cut in sorted(cuts):
        got += stream.feed(data[last:cut])
        last = max(last, cut)
    got += stream.feed(data[last:]) + stream.flush()
    assert got == expected


# --- any chunk size plays the same (issue 14, item 3) ---------------------------------------------------


@pytest.mark.parametrize("chunk_ms", [10, 15, 20, 30, 60])
def test_reframe_gives_the_20_ms_frames_of_any_chunking(chunk_ms):
    pcm = tone_at(8000, 440, seconds=0.777)
    frames = to_frames(pcm)
    chunks = to_frames(pcm, chunk_ms * 16)
    assert reframe(chunks) == frames
    assert reframe(frames) is frames  # already 20 ms: the same list, no copy


# --- levels (issue 14, item 6) --------------------------------------------------------------------------


def test_active_level_ignores_pauses():
    tone = tone_at(8000, 500, amplitude=3277 * math.sqrt(2), seconds=0.5)  # RMS 3277 = -20 dBFS
    with_pause = tone + bytes(16000) + tone
    assert active_level_dbfs(tone) == pytest.approx(-20, abs=0.1)
    assert active_level_dbfs(with_pause) == pytest.approx(-20, abs=0.1)
    assert active_level_dbfs(bytes(3200)) is None


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8), gain=st.sampled_from([0.1, 0.5, 2.0]))
def test_stream_leveller_holds_one_gain_and_does_not_depend_on_the_cutting(cuts, gain):
    pcm = tone_at(8000, 600, amplitude=8000 * gain, seconds=1.0) + tone_at(8000, 900, amplitude=2000, seconds=1.0)
    frames = to_frames(pcm)
    whole = StreamLeveller(Loudness(-20))
    expected = whole.feed(frames) + whole.flush()
    leveller = StreamLeveller(Loudness(-20))
    got, last = [], 0
    for cut in sorted(cuts):
        got += leveller.feed(frames[last:cut])
        last = max(last, cut)
    got += leveller.feed(frames[last:]) + leveller.flush()
    assert got == expected and len(got) == len(frames)
    # the first part is at the target; the quieter second part keeps its 12 dB step down (no pumping)
    first, second = b"".join(got[:40]), b"".join(got[60:])
    assert active_level_dbfs(first) == pytest.approx(-20, abs=0.2)
    assert active_level_dbfs(second) - active_level_dbfs(first) == pytest.approx(
        20 * math.log10(2000 / (8000 * gain)), abs=0.3)


def test_levelling_never_clips_the_measured_part():
    loud_peaks = tone_at(8000, 300, amplitude=30000, seconds=0.02) + tone_at(8000, 300, amplitude=300, seconds=1)
    leveller = StreamLeveller(Loudness(-6, max_gain_db=40))
    out = b"".join(leveller.feed(to_frames(loud_peaks)) + leveller.flush())
    assert audioop.max(out, 2) <= 32767 * 10 ** (-1 / 20) + 1
