"""`voice-bridge demo`'s command line: described as the two calls it places, files it could not write refused
before anything starts, and its recordings ignored by git."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from support.process import ROOT, clean_env

SCRIPT = Path(sys.executable).parent / "voice-bridge"


@pytest.mark.parametrize("args, words", [
    (["--out", "no-such-folder/call.wav"], "--out no-such-folder/call.wav: the folder no-such-folder does not exist"),
    (["--out", "."], "--out .: is a folder"),
    (["--json-report", "missing/report.json"], "--json-report missing/report.json: the folder missing does not exist"),
])
def test_demo_refuses_an_output_it_could_not_write_before_starting(tmp_path, args, words):
    result = subprocess.run(
        [str(SCRIPT), "demo", *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and words in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # nothing was started: no Redis, no emulator, no call
    assert list(tmp_path.iterdir()) == []


def test_demo_is_described_as_placing_two_calls():
    result = subprocess.run([str(SCRIPT), "--help"], env=clean_env(), capture_output=True, text=True, timeout=60,
                            check=False)
    text = " ".join(result.stdout.split())
    assert "demo run everything embedded and place two recorded calls" in text


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_demos_default_recordings_are_ignored_by_git():
    from bridge.sim.demo import DEFAULT_OUT

    first = Path(DEFAULT_OUT)
    second = first.with_name(f"{first.stem}-cached{first.suffix}")
    result = subprocess.run(["git", "check-ignore", "--no-index", str(first), str(second)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.split() == [str(first), str(second)], result.stderr


def test_demo_live_without_a_key_names_the_key_before_starting_anything(monkeypatch, capsys, tmp_path):
    started: list[str] = []
    monkeypatch.setattr("bridge.sim.demo.RedisServer", lambda *a, **k: started.append("redis"))
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    assert main(["demo", "--live", "--out", str(tmp_path / "x.wav")]) == 2
    assert started == []
    assert "configuration error: ELEVENLABS_API_KEY: --live" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
