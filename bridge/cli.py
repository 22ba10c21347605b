"""`voice-bridge` (also `python -m bridge`): one subcommand per module.

Each subcommand lives in its own module, which exposes `configure_parser(parser)` and `run(args) -> int`.
Modules are imported only for the subcommand that runs, so `voice-bridge call` does
not pay for the emulator's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from voice.config import ConfigError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("bridge.server", "run the AudioSocket server"),
    "load-audio": ("voice.load_static_audio", "load WAV files as static fragments static:<file stem>"),
    "call": ("bridge.caller", "place one simulated Asterisk AudioSocket call and report its timing"),
    "emulator": ("voice.emulator", "run the local ElevenLabs-compatible server"),
    "llm-emulator": ("bridge.llm_emulator", "run a local OpenAI-compatible streaming chat endpoint (tests, demo)"),
    "demo": ("bridge.demo", "run everything embedded and place a recorded call"),
    "bench": ("bridge.bench", "many concurrent simulated calls with a latency and pacing report"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-bridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
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
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        print(f"voice-bridge {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
