"""The sample static fragments shipped in bridge/data/fragments/: the specified phrases, telephone-ready."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tomllib

import pytest

from support.process import ROOT
from voice.audio import FRAME_BYTES, SAMPLE_RATE, SAMPLE_WIDTH, read_wav, rms, to_frames

FRAGMENTS = ROOT / "bridge" / "data" / "fragments"
GENERATOR = ROOT / "bridge" / "sim" / "make_fragments.py"

# The specification's phrases (issue "Operator experience", item 1), by fragment stem.
EXPECTED = {
    "hello": "Здравствуйте!",
    "your_cost_is": "Ваша стоимость составляет...",
    "rubles": "...рублей",
    "menu": "Нажмите один, чтобы повторить, или ноль, чтобы завершить.",
    "goodbye": "До свидания!",
    "one_moment": "Минуточку...",
    "filler_tak": "Так-с...",
    "filler_aga": "Ага...",
    "fallback": "Извините, сейчас я не могу это произнести.",
}

SPEECH_RMS = 500  # a 20 ms frame louder than this is speech, not noise or padding


def load_generator():
    spec = importlib.util.spec_from_file_location("make_fragments", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exactly_the_specified_fragments_are_shipped():
    assert sorted(p.stem for p in FRAGMENTS.glob("*.wav")) == sorted(EXPECTED)
    assert sorted(p.name for p in FRAGMENTS.iterdir()) == sorted(f"{stem}.wav" for stem in EXPECTED)


def test_generator_speaks_the_specified_phrases():
    assert load_generator().PHRASES == EXPECTED


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_fragment_is_8khz_mono_16bit_speech(stem):
    wav = read_wav(FRAGMENTS / f"{stem}.wav")
    assert (wav.source_rate, wav.source_width, wav.source_channels) == (SAMPLE_RATE, SAMPLE_WIDTH, 1)
    assert 0.3 <= wav.duration_s <= 6.0, f"{stem}: {wav.duration_s:.2f} s"
    levels = [rms(frame) for frame in to_frames(wav.pcm)]
    speech = [level > SPEECH_RMS for level in levels]
    assert max(levels) > 2000, f"{stem}: peak frame RMS {max(levels)}: too quiet"
    assert sum(speech) / len(speech) >= 0.4, f"{stem}: mostly silence"
    # Trimmed: speech starts and ends within 150 ms of the file's edges (the generator pads 30/50 ms).
    edge = int(0.15 * SAMPLE_RATE * SAMPLE_WIDTH / FRAME_BYTES)
    assert any(speech[: edge + 1]) and any(speech[-edge - 1 :]), f"{stem}: untrimmed silence at an edge"


def test_fragments_are_distinct_and_small():
    digests = {hashlib.sha256(read_wav(p).pcm).hexdigest() for p in FRAGMENTS.glob("*.wav")}
    assert len(digests) == len(EXPECTED)
    total = sum(p.stat().st_size for p in FRAGMENTS.glob("*.wav"))
    assert total < 400_000, f"{total} bytes of sample fragments"


def test_fragments_are_package_data():
    """pyproject's package-data patterns include every fragment, so an installed wheel ships them."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bridge"]
    for path in FRAGMENTS.glob("*.wav"):
        relative = path.relative_to(ROOT / "bridge").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_generator_rejects_an_unknown_stem():
    done = subprocess.run([sys.executable, str(GENERATOR), "nonsense"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown stem(s): nonsense" in done.stderr


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="espeak-ng and sox not installed")
def test_generator_reproduces_a_fragment(tmp_path):
    """The committed file is what the script makes (same tools: same bytes; else at least the same shape)."""
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path), "goodbye"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    made, shipped = read_wav(tmp_path / "goodbye.wav"), read_wav(FRAGMENTS / "goodbye.wav")
    assert made.source_format == shipped.source_format == "8000 Hz 16-bit mono"
    assert abs(made.duration_s - shipped.duration_s) < 0.25 * shipped.duration_s
