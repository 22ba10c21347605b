"""The tools' own entry points (`python -m voice.emulators...`) refuse a bad setting in one line, as
subprocesses; the settings model itself is tested in tests/unit/test_config.py."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, env", [("voice.emulators.llm", "LLM_EMULATOR_PORT"),
                                         ("voice.emulators.elevenlabs", "EMULATOR_PORT")])
def test_an_emulator_run_as_a_module_names_a_bad_port_without_a_traceback(module, env, tmp_path):
    environ = {"PATH": "/usr/bin:/bin", env: "eighty"}
    proc = subprocess.run([sys.executable, "-m", module], env=environ, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{env}: expected a whole number, got 'eighty'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_emulator_run_as_a_module_names_a_bad_log_level(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "voice.emulators.llm"], env={"PATH": "/usr/bin:/bin",
                          "LOG_LEVEL": "chatty"}, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "LOG_LEVEL: must be one of" in proc.stderr and "Traceback" not in proc.stderr
