"""Packaging for production: each subcommand's --help explains its settings, and every configuration error
names the setting and the problem (without echoing a secret)."""

from __future__ import annotations


import pytest

from bridge.cli import SUBCOMMANDS, main
from bridge.config import PARTS
from voice.config import env_name


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare on single spaces


def test_every_subcommand_help_explains_logging(capsys):
    for command in SUBCOMMANDS:
        text = help_of(command, capsys)
        assert "LOG_LEVEL" in text and "LOG_FORMAT" in text, command
        assert "masked" in text, command


def test_serve_help_lists_every_setting_with_its_default(capsys):
    text = help_of("serve", capsys)
    for cls in PARTS:
        for name, field in cls.model_fields.items():
            env = env_name(name, field)
            assert f"env {env};" in text, env
            assert field.description.split(";")[0] in text, env
    assert "METRICS_PORT" in text and "METRICS_HOST" in text
    assert "default (secret)" in text  # the API key's default is never printed


@pytest.mark.parametrize("command, settings", [
    ("load-audio", ["REDIS_URL", "REDIS_SOCKET_TIMEOUT"]),
    ("call", ["BRIDGE_HOST", "BRIDGE_PORT"]),
    ("emulator", ["EMULATOR_PORT", "ELEVENLABS_API_KEY"]),
    ("demo", ["ELEVENLABS_API_KEY", "ELEVENLABS_VOICE_ID", "--live"]),
])
def test_other_subcommands_name_the_settings_they_read(command, settings, capsys):
    text = help_of(command, capsys)
    for setting in settings:
        assert setting in text, (command, setting)


@pytest.mark.parametrize("command, env, value, expected", [
    ("serve", "BRIDGE_PORT", "abc", "BRIDGE_PORT: expected a whole number, got 'abc'"),
    ("serve", "METRICS_PORT", "70000", "METRICS_PORT: must be between 0 and 65535, got 70000"),
    ("serve", "REDIS_URL", "localhost:6379", "REDIS_URL: scheme must be one of"),
    ("serve", "ELEVENLABS_OUTPUT_FORMAT", "mp3_44100_128", "ELEVENLABS_OUTPUT_FORMAT: must be one of"),
    ("serve", "BRIDGE_SHUTDOWN_GRACE", "-1", "BRIDGE_SHUTDOWN_GRACE: must be between 0"),
    ("serve", "LOG_FORMAT", "xml", "LOG_FORMAT: must be one of auto, json, console, got 'xml'"),
    ("load-audio", "REDIS_URL", "redis://", "REDIS_URL: has no host"),
    ("load-audio", "LOG_LEVEL", "loud", "LOG_LEVEL: must be one of debug, info, warning, error, got 'loud'"),
    ("call", "BRIDGE_PORT", "99999", "BRIDGE_PORT: must be between 1 and 65535, got 99999"),
    ("call", "LOG_LEVEL", "loud", "LOG_LEVEL: must be one of"),
    ("bench", "LOG_FORMAT", "yaml", "LOG_FORMAT: must be one of"),
    ("demo", "LOG_LEVEL", "loud", "LOG_LEVEL: must be one of"),
])
def test_a_configuration_error_names_the_setting_and_the_problem(command, env, value, expected, monkeypatch,
                                                                 capsys, tmp_path):
    monkeypatch.setenv(env, value)
    args = [command] + {"load-audio": [str(tmp_path)]}.get(command, [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"voice-bridge {command}: configuration error: {expected}" in err, err


def test_the_emulator_port_error_names_its_variable(monkeypatch, capsys):
    monkeypatch.setenv("EMULATOR_PORT", "x")
    assert main(["emulator"]) == 2
    assert "EMULATOR_PORT: expected a whole number, got 'x'" in capsys.readouterr().err


def test_a_configuration_error_does_not_echo_a_password(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "http://:hunter2-secret@redis.example:6379/0")  # wrong scheme, real password
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "REDIS_URL: scheme must be one of" in err and "http://:***@redis.example:6379/0" in err
    assert "hunter2-secret" not in err
    assert main(["serve", "--redis-url", "redis://:flag-pass-123@"]) == 2
    err = capsys.readouterr().err
    assert "REDIS_URL: has no host" in err and "flag-pass-123" not in err
