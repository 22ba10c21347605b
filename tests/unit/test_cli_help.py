"""Packaging for production: each subcommand's --help explains its settings, and every configuration error
names the setting and the problem (without echoing a secret)."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from pathlib import Path

import pytest

from bridge.cli import SUBCOMMANDS, build_parser, main
from bridge.config import PARTS
from voice.config import env_name, help_with_default, show_value


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
    assert "[env ELEVENLABS_API_KEY; default unset]" in text  # a key has no default, and none is printed


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
    args = [command, *{"load-audio": [str(tmp_path)]}.get(command, [])]
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


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"voice-bridge {importlib.metadata.version('voice-bridge')}"


def test_the_top_level_help_says_what_voice_bridge_is_and_the_commands_most_used(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    intro = " ".join(text.split("\n\n")[1].split())
    assert intro.startswith("voice-bridge answers Asterisk calls") and "ElevenLabs" in intro
    for command in ("demo", "load-audio DIR", "check", "serve"):
        assert f"\n  voice-bridge {command} " in text, command
    assert "one subcommand per module" not in text  # not the module's docstring
    assert max(len(line) for line in text.splitlines()) <= 80


def test_load_audio_help_lists_only_the_settings_loading_uses(capsys):
    text = help_of("load-audio", capsys)
    offered = set(re.findall(r"\[env ([A-Z_]+);", text))
    assert offered == {"REDIS_URL", "REDIS_SOCKET_TIMEOUT", "REDIS_CONNECT_TIMEOUT", "AUDIO_NORMALIZE",
                       "AUDIO_TARGET_DBFS"}
    for unused in ("TTS_CACHE_TTL", "STATIC_MEMO_TTL", "REDIS_BREAKER_COOLOFF", "REDIS_MAX_CONNECTIONS"):
        assert unused not in text, unused
    with pytest.raises(SystemExit):  # and the flag is gone, not only its help
        main(["load-audio", "--tts-cache-ttl", "5", "."])


DEFAULT_NOTE = re.compile(r"\[(?:env (?P<env>[A-Z0-9_]+); )?default (?P<shown>[^\[\]]+)\]$")


def _actions(command: str) -> list[tuple[argparse.Action, str]]:
    """Every option of `command` with its help as `--help` prints it (argparse's %-expansion done)."""
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    formatter = sub._get_formatter()
    return [(action, " ".join(formatter._expand_help(action).split())) for action in sub._actions
            if action.help not in (None, argparse.SUPPRESS) and action.option_strings
            and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))]


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_help_shows_defaults_in_one_notation(command):
    """`[default X]`, or `[env VAR; default X]` for what a variable also sets; no `(default ...)`,
    `default: ...` or bare `[X]`. Every option with a default shows it, and shows the real one."""
    for action, text in _actions(command):
        name = action.option_strings[-1]
        note = DEFAULT_NOTE.search(text)
        assert not re.search(r"\(default|default:|\[default [a-z]+:", text), (name, text)
        rest = DEFAULT_NOTE.sub("", text)
        assert not re.search(r"\[[^\]]*\]$", rest.strip()), (name, text)  # no other trailing bracket
        if action.nargs == 0:  # a switch: off unless given, nothing to show
            assert note is None, (name, text)
            continue
        if action.default not in (None, "", []):
            assert note is not None, (name, text)
            assert note["shown"] == show_value(action.default), (name, text, action.default)
        if note is not None and note["env"] is None and action.default is None:
            assert note["shown"] != "unset", (name, text)  # "unset" names a variable's state


def test_a_default_is_shown_as_it_would_be_written():
    assert [show_value(v) for v in (5.0, 0.25, 2592000, True, ("a", "b"), {}, "", None, Path("x.wav"))] == \
        ["5", "0.25", "2592000", "true", "a,b", "{}", "unset", "unset", "x.wav"]
    assert help_with_default("100% loud", 3) == "100%% loud [default 3]"  # argparse halves the %%
