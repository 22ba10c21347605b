"""`voice-bridge check`: the preflight, run by hand with the same settings (environment and flags) as `serve`.

One line per check, `ok`/`warn`/`FAIL`, the check's name, what it found and, after `->`, what to do:

    ok   redis        redis://127.0.0.1:6379/0 reachable, write/read ok
    FAIL tts-key      401 invalid_api_key: Invalid API key  -> set ELEVENLABS_API_KEY to a valid key: ...

`--json` prints one JSON object instead. Exit status: 0 when nothing failed (warnings do not fail), 1 when a
check failed, 2 for a configuration error (a bad setting or dialogue file: the same as `serve` refuses).
The checks themselves are in `bridge.preflight`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from bridge.config import (
    Settings,
    add_settings_flags,
    require_llm_settings,
    settings_from_args,
)
from bridge.dialogue import Dialogue, DialogueError
from bridge.preflight import DEFAULT_TIMEOUT_S, CheckResult, run_preflight
from voice.cache import RedisCacheManager
from voice.http import aclose_shared_client

LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
NAME_WIDTH = 12


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Check, before serving calls, what the calls will need: Redis (reachable, its database selectable, a "
        "scratch write and read), the ElevenLabs key (accepted; the voice and model exist), every fragment the "
        "dialogue can play (its static items, the fillers, the fallback), and the LLM and STT endpoints when "
        "they are used. Takes the same settings as serve. Exit status 0: all passed (warnings allowed); "
        "1: a check failed; 2: a configuration error."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"seconds each check may take [default {DEFAULT_TIMEOUT_S:g}]")
    add_settings_flags(parser)


def _timeout(raw: str) -> float:
    """Seconds each check may take: 0.1 to 600 (argparse names the option when it is refused)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not 0.1 <= value <= 600:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 600, got {raw!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from bridge.app import load_configured_dialogue

    settings = settings_from_args(args)  # a bad setting: ConfigError, exit 2 (bridge.cli)
    try:
        dialogue = load_configured_dialogue(settings)
    except DialogueError as exc:
        print(f"voice-bridge check: invalid dialogue:\n{exc}", file=sys.stderr)
        return 2
    require_llm_settings(dialogue, settings.llm)  # llm items need LLM_BASE_URL: ConfigError, exit 2
    results = asyncio.run(_check(settings, dialogue, args.timeout))
    report(results, sys.stdout, as_json=args.json)
    return exit_status(results)


async def _check(settings: Settings, dialogue: Dialogue, timeout_s: float) -> list[CheckResult]:
    try:
        return await run_preflight(settings, dialogue, timeout_s=timeout_s)
    finally:
        await aclose_shared_client()
        await RedisCacheManager.reset_instance()  # this command's own cache: leave no singleton behind


def exit_status(results: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0 (warnings do not fail)."""
    return 1 if any(r.status == "fail" for r in results) else 0


def format_line(result: CheckResult) -> str:
    """`FAIL tts-key      401 invalid_api_key: ...  -> set ELEVENLABS_API_KEY ...` (no remedy on an ok line)."""
    line = f"{LABELS[result.status]:<4} {result.name:<{NAME_WIDTH}} {result.detail}"
    if result.remedy and result.status != "ok":
        line += f"  -> {result.remedy}"
    return line


def report(results: Sequence[CheckResult], out: TextIO, *, as_json: bool = False) -> None:
    """Lines for people, or `{"ok": bool, "counts": {...}, "checks": [{name, status, detail, remedy}]}`."""
    if as_json:
        counts = {status: sum(r.status == status for r in results) for status in LABELS}
        document = {"ok": exit_status(results) == 0, "counts": counts, "checks": [r.as_dict() for r in results]}
        out.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        return
    out.writelines(format_line(result) + "\n" for result in results)
