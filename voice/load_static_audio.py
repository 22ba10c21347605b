"""`voice-bridge load-audio PATH...`: warm the cache with pre-recorded fragments.

Each audio file (or every `*.wav`, `*.flac`, `*.ogg`, ... directly inside a directory given) is converted to
8 kHz mono s16le, brought to `AUDIO_TARGET_DBFS` (unless `AUDIO_NORMALIZE=false`), cut in 20 ms chunks and
stored as `static:<file stem>` without expiry. A truncated or damaged file is reported with the reason and
not loaded. A bad file is reported and the others still
load; the exit status is 1 if anything failed (a bad file, a duplicate name, Redis unavailable), 2 for a
bad option, else 0.
`--dry-run` reads and converts everything but writes nothing, to check a directory before a release.

The report goes to stdout, one line per file; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from voice.audio import AudioFormatError, frame_bytes_for
from voice.cache import RedisCacheManager, read_audio_chunks
from voice.config import CacheConfig, add_flags, flag_overrides, load, safe_url
from voice.domain.interfaces.cache import AbstractCache
from voice.keys import static_key

LOADING_SETTINGS = ("REDIS_URL", "REDIS_SOCKET_TIMEOUT", "REDIS_CONNECT_TIMEOUT", "AUDIO_NORMALIZE",
                    "AUDIO_TARGET_DBFS")
"""The settings loading uses, offered as flags (the cache's others, TTLs, pool size, breaker, concern serve)."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="audio files (WAV, FLAC, OGG/Vorbis, ...), or directories of them")
    parser.add_argument("--dry-run", action="store_true", help="read and convert only; write nothing to Redis")
    parser.add_argument("--chunk-ms", type=int, default=20, metavar="MS", help="chunk length in ms [default 20]")
    add_flags(parser, CacheConfig, only=LOADING_SETTINGS)


def run(args: argparse.Namespace) -> int:
    """`voice-bridge load-audio` (the CLI has configured logging, to stderr: stdout is the report)."""
    config = load(CacheConfig, **flag_overrides(args, CacheConfig))
    return asyncio.run(load_paths(args.paths, config, dry_run=args.dry_run, chunk_ms=args.chunk_ms))


AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".caf", ".w64"})
"""What a directory is searched for: the containers libsndfile reads that recordings come in."""


def collect(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The audio files named by `paths` (directories expanded, sorted), and a problem line for each bad path."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append(f"{path}: directory has no .wav files (nor .flac, .ogg, ...)")
            files.extend(found)
        else:
            files.append(path)  # a missing or non-WAV file is reported by the reader, with its reason
    return files, problems


async def load_paths(
    paths: list[str],
    config: CacheConfig,
    *,
    dry_run: bool = False,
    chunk_ms: int = 20,
    out: TextIO | None = None,
    cache: AbstractCache | None = None,
) -> int:
    """Load (or with `dry_run` only convert) every file; print one line per file; 0 when all succeeded.

    `cache`: an already connected cache to write to (e.g. the demo's), left open; by default the process's
    `RedisCacheManager` for `config` is connected here and closed at the end.
    """
    out = out or sys.stdout
    try:
        frame_bytes_for(chunk_ms)
    except ValueError as exc:
        print(f"FAILED  --chunk-ms: {exc}", file=out)
        return 2
    files, problems = collect(paths)
    failed = len(problems)
    for problem in problems:
        print(f"FAILED  {problem}", file=out)
    target = None if dry_run else cache
    owned = target is None and not dry_run and bool(files)
    if owned:
        target = RedisCacheManager(config)
        await target.connect()
    seen: dict[str, Path] = {}
    loaded = 0
    try:
        for path in files:
            ok = await _load_one(path, seen, target, chunk_ms, out, config.loudness_target)
            loaded += ok
            failed += not ok
    finally:
        if owned and target is not None:
            await target.close()
    where = "dry run, nothing written" if dry_run else safe_url(config.redis_url)
    print(f"{loaded} loaded, {failed} failed ({where})", file=out)
    return 1 if failed else 0


def _level(level: float | None, gain: float) -> str:
    """", level -27.1 dBFS +7.1 dB": what the file measured and the gain it got (nothing when silent)."""
    if level is None:
        return ", silent"
    return f", level {level:.1f} dBFS" + (f" {gain:+.1f} dB" if gain else "")


async def _load_one(path: Path, seen: dict[str, Path], cache: AbstractCache | None, chunk_ms: int,
                    out: TextIO, target_dbfs: float | None = None) -> bool:
    try:
        key = static_key(path.stem)
    except ValueError as exc:
        print(f"FAILED  {path}: unusable fragment name ({exc})", file=out)
        return False
    if key in seen:
        print(f"FAILED  {path}: same name as {seen[key]} (both would be {key})", file=out)
        return False
    seen[key] = path
    try:
        if cache is None:
            read = await asyncio.to_thread(read_audio_chunks, str(path), chunk_ms, target_dbfs)
            count, duration, source, stored = len(read.chunks), read.audio.duration_s, read.audio.source_format, True
            level, gain = read.level_dbfs, read.gain_db
        else:
            result = await cache.load_and_set_audio(key, str(path), chunk_ms)
            count, duration, source, stored = result.chunks, result.duration_s, result.source_format, result.stored
            level, gain = result.level_dbfs, result.gain_db
    except (AudioFormatError, ValueError) as exc:
        print(f"FAILED  {exc}", file=out)
        return False
    line = f"{key}  {count} frames of {chunk_ms} ms  {duration:.2f} s  from {source}{_level(level, gain)}  ({path})"
    if not stored:
        print(f"FAILED  {line}: Redis write failed (see the log)", file=out)
        return False
    print(f"{'checked' if cache is None else 'loaded '} {line}", file=out)
    return True
