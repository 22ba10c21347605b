"""The physical floor: a C epoll server that does only what pacing N calls cannot avoid, run as a yardstick.

`floor.c` (kept in the shared folder beside the repository, never in it) sends each call one 323-byte tone
frame every 20 ms at the call's phase and reads and discards what arrives: no parsing, no allocation per
frame. Its CPU per call-second is what the kernel's TCP path costs on this machine, so a server's figure
divided by the floor's, measured in the same run with the same callers, is that server's overhead ratio,
comparable across machines. The benchmark compiles it once (`cc -O2`) into a cache directory keyed by the
source's hash, and runs the binary beside the bridge and the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from bridge.sim.bench.load import BridgeProcess, _free_port

__all__ = ["FLOOR_SOURCE_NAME", "FloorError", "FloorProcess", "build_floor", "default_floor_source"]

FLOOR_SOURCE_NAME = Path("shared", "bench", "floor.c")
_LISTENING = re.compile(rb"floor listening on [0-9.]+:(\d+)")


class FloorError(RuntimeError):
    """The floor cannot run here: no source, no C compiler, or it did not compile or start."""


def _repository_root() -> Path:
    """The checkout this module runs from (bridge/sim/bench/floor.py -> four levels up)."""
    return Path(__file__).resolve().parents[3]


def default_floor_source() -> Path | None:
    """`../shared/bench/floor.c` relative to the repository, else the same beside any folder above it
    (a git worktree under /work/wt/NAME finds /work/shared); None when there is none."""
    root = _repository_root()
    for folder in (root.parent, *root.parent.parents):
        candidate = folder / FLOOR_SOURCE_NAME
        if candidate.is_file():
            return candidate
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-bridge" / "floor"


def build_floor(source: Path, cache_dir: Path | None = None, compiler: str = "cc") -> Path:
    """Compile `source` with `cc -O2` unless a binary of the same source is already cached; return its path.

    The binary's name carries the source's hash, so an edited floor.c is rebuilt and an unchanged one is not.
    """
    if not source.is_file():
        raise FloorError(f"--floor-source: no such file {source}")
    cc = shutil.which(compiler)
    if cc is None:
        raise FloorError(f"the floor needs a C compiler ({compiler!r} is not on PATH); "
                         "install one or leave --floor out")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    folder = cache_dir or _cache_dir()
    binary = folder / f"floor-{digest}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".floor-{digest}.{os.getpid()}"
    done = subprocess.run([cc, "-O2", "-o", str(partial), str(source)], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise FloorError(f"{compiler} -O2 {source} failed: {done.stderr.strip()[-500:]}")
    partial.replace(binary)  # atomic: a concurrent bench sees the whole binary or none
    return binary


class FloorProcess(BridgeProcess):
    """The floor binary on a free loopback port, shaped like `BridgeProcess` for the benchmark's run.

    It has no clock statistics (SIGUSR1 would kill it: it installs no handler), so `snapshot_stats` returns
    None without signalling; CPU and memory are read from /proc as for the bridge.
    """

    def __init__(self, binary: Path) -> None:
        super().__init__((), 0, command=[str(binary)])
        self.binary = binary

    async def start(self, timeout_s: float = 20.0) -> None:
        port = _free_port()
        self.proc = await asyncio.create_subprocess_exec(
            str(self.binary), str(port), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        try:
            line = await asyncio.wait_for(self.proc.stderr.readline(), timeout_s)
        except TimeoutError:
            line = b""
        found = _LISTENING.search(line)
        if found is None:
            rest = b""
            with contextlib.suppress(asyncio.TimeoutError):
                rest = await asyncio.wait_for(self.proc.stderr.read(2000), 1)
            await self.kill()
            raise FloorError(f"the floor ({self.binary}) did not start listening: "
                             f"{(line + rest).decode(errors='replace').strip() or 'no output'}")
        self.port = int(found.group(1))
        self._reader = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.warnings.append(raw.decode(errors="replace").strip())

    async def snapshot_stats(self, timeout_s: float = 5.0) -> None:
        return None
