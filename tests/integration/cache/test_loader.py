"""`voice-bridge load-audio`: what it prints, what it stores, and its exit status."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from bridge.cli import main
from support.wav import s16, sine, write_pcm_wav
from voice.emulators.redis_server import free_port


@pytest.fixture
def fragments(tmp_path):
    folder = tmp_path / "fragments"
    folder.mkdir()
    write_pcm_wav(folder / "intro.wav", s16(sine(16000, 300, 48000, 8000)), 16000)  # 3 s
    stereo = [v for v in sine(44100, 300, 22050, 8000) for _ in range(2)]
    write_pcm_wav(folder / "currency.wav", s16(stereo), 44100, channels=2)  # 0.5 s
    (folder / "readme.txt").write_text("not audio, not a .wav: ignored")
    return folder


def test_loads_a_directory_and_prints_frames_duration_and_format(fragments, redis_url, raw, capsys):
    status = main(["load-audio", str(fragments), "--redis-url", redis_url])
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    currency = next(line for line in lines if "static:currency" in line)
    intro = next(line for line in lines if "static:intro" in line)
    assert "25 frames" in currency and "0.50 s" in currency and "44100 Hz 16-bit stereo" in currency
    assert "150 frames" in intro and "3.00 s" in intro and "16000 Hz 16-bit mono" in intro
    assert lines[-1].startswith("2 loaded, 0 failed")
    assert sorted(raw.keys()) == [b"static:currency", b"static:intro"]
    assert raw.llen("static:intro") == 150 and raw.ttl("static:intro") == -1
    assert all(len(chunk) == 320 for chunk in raw.lrange("static:intro", 0, -1))


def test_a_bad_file_is_reported_and_the_rest_still_load(fragments, tmp_path, redis_url, raw, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_text("garbage, not a WAV file, long enough to have a header")
    status = main(["load-audio", str(bad), str(fragments), str(tmp_path / "absent.wav"), "--redis-url", redis_url])
    out = capsys.readouterr().out
    assert status == 1
    assert f"FAILED  {bad}: not a usable WAV file" in out
    assert "absent.wav: no such file" in out
    assert "2 loaded, 2 failed" in out
    assert sorted(raw.keys()) == [b"static:currency", b"static:intro"]


def test_dry_run_converts_but_writes_nothing(fragments, redis_url, raw, capsys):
    status = main(["load-audio", str(fragments), "--dry-run", "--redis-url", redis_url])
    out = capsys.readouterr().out
    assert status == 0
    assert "checked static:intro  150 frames" in out
    assert "dry run, nothing written" in out
    assert raw.dbsize() == 0


def test_dry_run_still_fails_on_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert main(["load-audio", str(bad), "--dry-run"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_redis_down_fails_every_write_with_a_non_zero_status(fragments, capsys):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    status = main(["load-audio", str(fragments), "--redis-url", dead, "--redis-connect-timeout", "0.2"])
    out = capsys.readouterr().out
    assert status == 1
    assert out.count("Redis write failed") == 2
    assert "0 loaded, 2 failed" in out


def test_two_files_with_the_same_name_are_refused(fragments, tmp_path, redis_url, raw, capsys):
    other = tmp_path / "other"
    other.mkdir()
    write_pcm_wav(other / "intro.wav", s16([1] * 800), 8000)
    status = main(["load-audio", str(fragments), str(other), "--redis-url", redis_url])
    out = capsys.readouterr().out
    assert status == 1
    assert "same name as" in out and "static:intro" in out
    assert raw.llen("static:intro") == 150  # the first one stays


def test_an_empty_directory_is_a_failure(tmp_path, redis_url, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["load-audio", str(tmp_path / "empty"), "--redis-url", redis_url]) == 1
    assert "has no .wav files" in capsys.readouterr().out


def test_bad_options_exit_2(fragments, capsys):
    assert main(["load-audio", str(fragments), "--chunk-ms", "0", "--dry-run"]) == 2
    assert "--chunk-ms" in capsys.readouterr().out
    assert main(["load-audio", str(fragments), "--redis-url", "http://nowhere"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


def test_the_real_command_keeps_stdout_for_the_report(fragments, tmp_path, redis_url):
    bad = tmp_path / "bad.wav"
    bad.write_text("x" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "load-audio", str(fragments), str(bad), "--redis-url", redis_url],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # two loaded, one failed, the summary: no log lines mixed in
    assert "cache_connected" in result.stderr
    with redis.Redis.from_url(redis_url) as raw:
        assert raw.exists("static:intro", "static:currency") == 2


def test_fragments_are_stored_at_the_target_level_and_the_line_says_so(tmp_path, redis_url, raw, capsys):
    """Issue 14: a quiet and a loud recording (FLAC and 24-bit EXTENSIBLE WAV) end up at one level."""
    import numpy as np
    import soundfile

    from voice.audio import active_level_dbfs

    folder = tmp_path / "levels"
    folder.mkdir()
    t = np.arange(16000) / 16000
    soundfile.write(str(folder / "quiet.flac"), 0.02 * np.sin(2 * np.pi * 300 * t), 16000)  # about -37 dBFS
    soundfile.write(str(folder / "loud.wav"), 0.5 * np.sin(2 * np.pi * 300 * t), 16000, format="WAVEX",
                    subtype="PCM_24")  # about -9 dBFS
    status = main(["load-audio", str(folder), "--redis-url", redis_url, "--audio-target-dbfs", "-20"])
    out = capsys.readouterr().out
    assert status == 0, out
    quiet = next(line for line in out.splitlines() if "static:quiet" in line)
    loud = next(line for line in out.splitlines() if "static:loud" in line)
    assert "FLAC 16-bit" in quiet and "level -37.0 dBFS +17.0 dB" in quiet
    assert "24-bit" in loud and "level -9.0 dBFS -11.0 dB" in loud
    for key in (b"static:quiet", b"static:loud"):
        assert active_level_dbfs(b"".join(raw.lrange(key, 0, -1))) == pytest.approx(-20, abs=0.1)

    import asyncio

    from voice.cache import RedisCacheManager

    asyncio.run(RedisCacheManager.reset_instance())  # another configuration: another process's Singleton
    status = main(["load-audio", str(folder / "loud.wav"), "--redis-url", redis_url, "--audio-normalize", "false"])
    out = capsys.readouterr().out
    assert status == 0 and "level -9.0 dBFS  (" in out  # measured, not changed
    assert active_level_dbfs(b"".join(raw.lrange(b"static:loud", 0, -1))) == pytest.approx(-9, abs=0.1)
