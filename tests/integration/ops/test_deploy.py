"""deploy/: the systemd unit and the example environment file are valid and agree with each other."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import secret_fields
from bridge.config import Settings
from support.process import ROOT
from voice.config import env_names

UNIT = ROOT / "deploy" / "voice-bridge.service"
ENV_FILE = ROOT / "deploy" / "voice-bridge.env"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def env_file() -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments and blank lines skipped)."""
    values = {}
    for line in ENV_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key == key.strip() and key.isupper(), line
        values[key] = value
    return values


def known_settings() -> set[str]:
    return set(env_names(Settings))


def test_the_unit_runs_serve_with_the_environment_file_and_a_long_enough_stop_timeout():
    service = unit()["Service"]
    command = service["ExecStart"].split()
    assert Path(command[0]).name == "voice-bridge" and command[1:] == ["serve"]
    assert service["EnvironmentFile"].endswith("/voice-bridge.env")
    assert service["KillSignal"] == "SIGTERM"
    env = env_file()
    grace = float(env["BRIDGE_SHUTDOWN_GRACE"])
    assert float(service["TimeoutStopSec"]) >= grace + 5  # calls end (or are hung up) before systemd kills
    assert int(service["LimitNOFILE"]) > int(env["BRIDGE_MAX_CALLS"]) * 2  # a socket per call, plus headroom
    assert service["Restart"] == "on-failure" and service["User"] == "voice-bridge"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_environment_file_is_a_valid_configuration():
    env = env_file()
    unknown = set(env) - known_settings()
    assert not unknown, f"not settings of the bridge: {unknown}"
    settings = Settings.load(environ=env)  # raises ConfigError naming a bad value
    assert settings.bridge.metrics_port > 0 and settings.bridge.log_format == "json"
    assert settings.tts.api_key.get_secret_value()  # the one setting without a usable default: a placeholder
    assert {env for _, env in secret_fields()} >= {"ELEVENLABS_API_KEY"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    # the unit as installed, its ExecStart pointing at this venv's script (the only thing missing here)
    text = UNIT.read_text().replace("/opt/voice-bridge/venv/bin/voice-bridge", str(Path(sys.executable).parent
                                                                                  / "voice-bridge"))
    copy = tmp_path / "voice-bridge.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "voice-bridge.service" in line and "Documentation" not in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
