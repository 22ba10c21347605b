"""`voice-bridge` (also `python -m bridge`): one subcommand per module.

Each subcommand lives in its own module, which exposes `configure_parser(parser)` and `run(args) -> int`.
Modules are imported only for the subcommand that runs, so `voice-bridge call` does
not pay for the emulator's imports.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import textwrap
from collections.abc import Mapping, Sequence

from bridge.config import Settings
from bridge.ops.logs import configure_logging, mask, register_environment_secrets
from voice.config import ConfigError, LogSettings, read_environment, secret_settings

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("bridge.server", "answer Asterisk calls (AudioSocket) with the dialogue"),
    "check": ("bridge.check_cmd",
              "preflight: check Redis, the TTS key, the fragments, the LLM/STT with serve's settings"),
    "load-audio": ("voice.load_static_audio", "load WAV files as static fragments static:<file stem>"),
    "call": ("bridge.sim.caller", "place one simulated Asterisk AudioSocket call and report its timing"),
    "emulator": ("voice.emulators.elevenlabs", "run the local ElevenLabs-compatible server"),
    "llm-emulator": ("voice.emulators.llm", "run a local OpenAI-compatible streaming chat endpoint (tests, demo)"),
    "demo": ("bridge.sim.demo", "run everything embedded and place two recorded calls (the second hits the cache)"),
    "bench": ("bridge.sim.bench.load", "many concurrent simulated calls with a latency and pacing report"),
}


LOGGING_HELP = (
    "Logging (every command): LOG_LEVEL (debug, info, warning, error; default info) and LOG_FORMAT (json, "
    "console, or auto: console on a terminal, else JSON) from the environment; logs go to stderr. API keys "
    "and passwords in URLs are masked in every log line. Settings are read from the environment and from a "
    ".env file in the working directory, when there is one (the environment wins; a flag wins over both)."
)
WELL_KNOWN_SECRETS = ("ELEVENLABS_API_KEY", "LLM_API_KEY")
"""Masked in logs even before (or without) a settings class declaring them."""


DESCRIPTION = """\
voice-bridge answers Asterisk calls over AudioSocket and plays each caller a
dialogue: recorded fragments from Redis, with speech synthesized by ElevenLabs
for the parts that change.

most used:
  voice-bridge demo            try it: two calls, nothing to set up
  voice-bridge load-audio DIR  store your recordings in Redis as fragments
  voice-bridge check           check settings, Redis, the API key, the fragments
  voice-bridge serve           answer calls (dialplan: docs/asterisk.md)

`voice-bridge COMMAND --help` shows a command's options and settings."""
"""The top-level --help: what voice-bridge is, in one sentence, and the commands most used."""


def version() -> str:
    """The installed package's version (its metadata), or `unknown` when run from a tree not installed."""
    try:
        return importlib.metadata.version("voice-bridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-bridge", description=DESCRIPTION, epilog=textwrap.fill(LOGGING_HELP),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary, epilog=LOGGING_HELP)
        if only == name:
            module = importlib.import_module(module_name)
            module.configure_parser(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    try:
        prepare_process(args)
        return int(args._module.run(args) or 0)
    except ConfigError as exc:  # the message quotes the bad value: a password in a URL is masked
        print(f"voice-bridge {args.command}: configuration error: {mask(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def prepare_process(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
    """What every subcommand gets before it runs: secrets registered for masking, logging configured.

    The one place `voice-bridge` configures logging (a forked worker re-points it at a line-atomic stream:
    see `bridge.ops.workers`). LOG_LEVEL and LOG_FORMAT are read by `LogSettings`; the subcommand's own
    --log-level / --log-format flags win; a subcommand module may set `DEFAULT_LOG_LEVEL` for when neither
    says (the demo, whose output is its report: warning).
    Raises ConfigError naming LOG_LEVEL or LOG_FORMAT when one is wrong.
    """
    fields = secret_fields()
    register_environment_secrets(read_environment(environ), {env for _, env in fields} | set(WELL_KNOWN_SECRETS))
    flags = {k: v for k, v in vars(args).items() if isinstance(v, str)}
    register_environment_secrets(flags, [name for name, _ in fields])  # the same, given as flags
    logging = LogSettings.load(environ, log_level=getattr(args, "log_level", None),
                               log_format=getattr(args, "log_format", None))
    level = logging.log_level
    if "log_level" not in logging.model_fields_set:
        level = getattr(getattr(args, "_module", None), "DEFAULT_LOG_LEVEL", level)
    configure_logging(level, logging.log_format)


def secret_fields() -> list[tuple[str, str]]:
    """(field name, environment variable) of every secret setting, in every part of `Settings`."""
    return secret_settings(Settings)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
