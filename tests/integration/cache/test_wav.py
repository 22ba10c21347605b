"""load_and_set_audio: WAV files of several formats become the expected 8 kHz samples in 20 ms chunks,
and every bad file raises an error naming the file and the problem, writing nothing."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import soundfile

from support.wav import from_s16, s16, sine, write_pcm_wav, write_raw_wav
from voice.audio import AudioFormatError
from voice.config import CacheConfig

TONE_HZ = 300
AMPLITUDE = 8000
TOLERANCE = AMPLITUDE // 100  # 1 % of the amplitude
RESAMPLER_EDGE = 80  # 10 ms at 8 kHz


@pytest.fixture
def cache_config(redis_url) -> CacheConfig:
    """Levelling off: these tests check the conversion sample for sample (levels: test_levels.py)."""
    return CacheConfig(redis_url=redis_url, audio_normalize=False)


def joined(chunks: list[bytes]) -> bytes:
    return b"".join(chunks)


def assert_chunked(chunks: list[bytes], samples: int, frame: int = 320) -> None:
    assert all(len(chunk) == frame for chunk in chunks)
    assert len(chunks) == -(-samples * 2 // frame)  # ceil
    padding = len(chunks) * frame - samples * 2
    assert joined(chunks)[len(joined(chunks)) - padding :] == b"\x00" * padding


def assert_is_tone(samples: list[int], count: int, edge: int = 0) -> None:
    """`samples` is the 300 Hz tone sampled at 8 kHz (expected values computed here, not by audioop).

    `edge`: samples left out at each end. A band-limited resampler rings for a few ms where a tone starts or
    stops abruptly (its spectrum there is not band-limited); inside, it must be exact within 1 %."""
    expected = sine(8000, TONE_HZ, count, AMPLITUDE)
    worst = max(abs(got - want) for got, want in list(zip(samples[:count], expected, strict=True))[edge : count - edge])
    assert worst <= TOLERANCE, f"worst deviation {worst} from the expected 8 kHz samples"


async def test_44k1_stereo_becomes_the_8k_mono_average(cache, tmp_path):
    rate, count = 44100, 44100  # one second
    mid = sine(rate, TONE_HZ, count, AMPLITUDE)
    side = sine(rate, 1000, count, 4000)  # cancels out in the average of the two channels
    left = [m + s for m, s in zip(mid, side, strict=True)]
    right = [m - s for m, s in zip(mid, side, strict=True)]
    interleaved = [value for pair in zip(left, right, strict=True) for value in pair]
    path = write_pcm_wav(tmp_path / "stereo.wav", s16(interleaved), rate, channels=2)

    result = await cache.load_and_set_audio("static:stereo", str(path))
    chunks = await cache.get_audio_chunks("static:stereo")
    samples = from_s16(joined(chunks))
    out_count = 8000  # one second at 8 kHz
    assert abs(result.duration_s - 1.0) < 0.001
    assert result.source_format == "44100 Hz 16-bit stereo"
    assert result.chunks == len(chunks) == 50 and result.stored
    assert_is_tone(samples, out_count, edge=RESAMPLER_EDGE)


async def test_16k_mono_is_resampled(cache, tmp_path):
    path = write_pcm_wav(tmp_path / "wide.wav", s16(sine(16000, TONE_HZ, 8000, AMPLITUDE)), 16000)
    result = await cache.load_and_set_audio("static:wide", str(path))
    chunks = await cache.get_audio_chunks("static:wide")
    assert result.source_format == "16000 Hz 16-bit mono"
    assert_chunked(chunks, 4000)
    assert_is_tone(from_s16(joined(chunks)), 4000, edge=RESAMPLER_EDGE)


async def test_8k_mono_16bit_is_stored_sample_for_sample(cache, tmp_path):
    samples = sine(8000, TONE_HZ, 1234, AMPLITUDE)  # 1234 samples: the last chunk is padded
    path = write_pcm_wav(tmp_path / "narrow.wav", s16(samples), 8000)
    await cache.load_and_set_audio("static:narrow", str(path))
    chunks = await cache.get_audio_chunks("static:narrow")
    assert_chunked(chunks, 1234)
    assert from_s16(joined(chunks))[:1234] == samples


async def test_8bit_unsigned_is_recentred_and_widened(cache, tmp_path):
    unsigned = [0, 1, 64, 127, 128, 129, 200, 255] * 100
    path = write_pcm_wav(tmp_path / "bytes.wav", bytes(unsigned), 8000, width=1)
    await cache.load_and_set_audio("static:bytes", str(path))
    samples = from_s16(joined(await cache.get_audio_chunks("static:bytes")))
    assert samples[: len(unsigned)] == [(u - 128) * 256 for u in unsigned]


async def test_24bit_keeps_the_top_sixteen_bits(cache, tmp_path):
    values = [-8388608, -65536, -256, 0, 255, 256, 65535, 8388607]
    data = b"".join(struct.pack("<i", v)[:3] for v in values)
    path = write_pcm_wav(tmp_path / "deep.wav", data, 8000, width=3)
    await cache.load_and_set_audio("static:deep", str(path))
    samples = from_s16(joined(await cache.get_audio_chunks("static:deep")))
    assert samples[: len(values)] == [v >> 8 for v in values]


async def test_chunk_size_is_honoured(cache, tmp_path):
    path = write_pcm_wav(tmp_path / "a.wav", s16([1000] * 8000), 8000)
    result = await cache.load_and_set_audio("static:a", str(path), chunk_size_ms=40)
    chunks = await cache.get_audio_chunks("static:a")
    assert result.chunks == 25 and all(len(chunk) == 640 for chunk in chunks)
    with pytest.raises(ValueError, match="chunk_size_ms"):
        await cache.load_and_set_audio("static:a", str(path), chunk_size_ms=0)


async def test_a_tts_key_loaded_from_a_file_gets_the_tts_ttl(cache, raw, tmp_path):
    path = write_pcm_wav(tmp_path / "a.wav", s16([1] * 800), 8000)
    await cache.load_and_set_audio("tts:0123456789ab:12500", str(path))
    assert raw.ttl("tts:0123456789ab:12500") > 86400


def _bad_files(tmp_path):
    """(name, path, words the error must contain) for every kind of unusable file."""
    text_long = tmp_path / "notes.wav"
    text_long.write_text("this is a text file, not a RIFF/WAVE file at all\n" * 3)
    text_short = tmp_path / "tiny.wav"
    text_short.write_text("hello")
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    empty = write_pcm_wav(tmp_path / "empty.wav", b"", 8000)
    good = write_pcm_wav(tmp_path / "good.wav", s16([5] * 800), 8000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    mp3 = write_raw_wav(tmp_path / "mp3.wav", 0x55, 8000, 1, 1, b"\xff" * 800)
    cut_data = tmp_path / "cut.wav"
    cut_data.write_bytes(good.read_bytes()[:44 + 100])  # the data chunk promises 1600 bytes
    flac = tmp_path / "cut.flac"
    soundfile.write(str(tmp_path / "whole.flac"), np.sin(np.arange(44100) / 7.0) * 0.3, 44100)
    whole = (tmp_path / "whole.flac").read_bytes()
    flac.write_bytes(whole[: len(whole) // 2])
    three = write_pcm_wav(tmp_path / "three.wav", s16([1, 2, 3] * 100), 8000, channels=3)
    directory = tmp_path / "folder.wav"
    directory.mkdir()
    return [
        ("missing", tmp_path / "absent.wav", ["no such file"]),
        ("directory", directory, ["is a directory"]),
        ("text", text_long, ["not a usable WAV"]),
        ("short text", text_short, ["WAV"]),
        ("zero bytes", zero, ["WAV"]),
        ("no samples", empty, ["contains no audio"]),
        ("truncated header", truncated, ["WAV"]),
        ("mp3 in a WAV", mp3, ["MP3", "cannot be decoded", "0x0055"]),
        ("truncated data", cut_data, ["truncated", "promises 1600 bytes"]),
        ("truncated FLAC", flac, ["truncated or damaged FLAC"]),
        ("three channels", three, ["3 channels"]),
    ]


async def test_every_bad_file_raises_naming_the_file_and_the_problem(cache, raw, tmp_path):
    for name, path, words in _bad_files(tmp_path):
        with pytest.raises(AudioFormatError) as caught:
            await cache.load_and_set_audio("static:bad", str(path))
        message = str(caught.value)
        assert str(path) in message, name
        for word in words:
            assert word in message, (name, message)
    assert raw.dbsize() == 0
    assert cache.failures == 0 and cache.available  # a bad file is not a Redis failure


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
async def test_an_unreadable_file_is_reported(cache, tmp_path):
    path = write_pcm_wav(tmp_path / "locked.wav", s16([1] * 80), 8000)
    path.chmod(0)
    with pytest.raises(AudioFormatError, match="permission denied"):
        await cache.load_and_set_audio("static:locked", str(path))


def _tone(rate: int, seconds: float = 0.5) -> np.ndarray:
    return (np.sin(2 * np.pi * TONE_HZ * np.arange(int(rate * seconds)) / rate) * AMPLITUDE / 32768).astype(np.float32)


@pytest.mark.parametrize(
    "container, subtype, suffix, described",
    [
        ("WAVEX", "PCM_16", "wav", "16-bit"),
        ("WAVEX", "PCM_24", "wav", "24-bit"),  # what sox writes for 24/32-bit: EXTENSIBLE, refused before
        ("WAVEX", "PCM_32", "wav", "32-bit"),
        ("WAV", "FLOAT", "wav", "32-bit float"),
        ("WAVEX", "FLOAT", "wav", "32-bit float"),
        ("WAV", "DOUBLE", "wav", "64-bit float"),
        ("WAV", "ALAW", "wav", "A-law"),
        ("WAV", "ULAW", "wav", "μ-law"),
        ("FLAC", "PCM_16", "flac", "FLAC 16-bit"),
        ("FLAC", "PCM_24", "flac", "FLAC 24-bit"),
        ("OGG", "VORBIS", "ogg", "OGG Vorbis"),
    ],
)
async def test_every_recording_format_loads_as_the_tone(cache, tmp_path, container, subtype, suffix, described):
    rate = 48000 if suffix != "wav" or (subtype != "ALAW" and subtype != "ULAW") else 8000
    path = tmp_path / f"tone.{suffix}"
    soundfile.write(str(path), _tone(rate), rate, format=container, subtype=subtype)
    result = await cache.load_and_set_audio("static:tone", str(path))
    samples = from_s16(joined(await cache.get_audio_chunks("static:tone")))
    assert result.source_format == f"{rate} Hz {described} mono"
    assert result.duration_s == pytest.approx(0.5, abs=0.001)
    # Lossless formats: the 8 kHz tone within 1 %; G.711 and Vorbis within their coding error.
    tolerance = {"VORBIS": 600, "ALAW": 300, "ULAW": 300}.get(subtype, TOLERANCE)
    expected = sine(8000, TONE_HZ, 4000, AMPLITUDE)
    worst = max(abs(g - w) for g, w in list(zip(samples, expected, strict=True))[RESAMPLER_EDGE:-RESAMPLER_EDGE])
    assert worst <= tolerance, (described, worst)
