"""A CPU quota for a benchmark's server: `limit_cpu(pids, share)` puts the processes in a cgroup of their own
that may use `share` of one core (CFS bandwidth control, a 10 ms period so that the quota cuts the server's
work into slices shorter than a frame rather than stopping it for tens of milliseconds).

Why: the overload benchmark needs 1.3x the calls one core can pace. On a 2-core machine the callers have the
other core, and once the bridge paces 2,000 calls a core they cannot place 2,600 calls without starving
their own loop. A server held to half a core paces half as many calls, so 1.3x of that is within the
callers' reach; the same quota is given to the floor. Needs root and the cgroup `cpu` controller (v1 or v2);
anything else is a clear `CgroupError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CgroupError", "limit_cpu"]

PERIOD_US = 10_000
ROOT = Path("/sys/fs/cgroup")


class CgroupError(RuntimeError):
    """The quota cannot be set here (not root, no cpu controller)."""


def _make(share: float) -> tuple[Path, Path]:
    """Create the group; returns (its directory, the file processes are written to)."""
    name = f"voice-bridge-bench-{os.getpid()}"
    quota = max(1000, round(share * PERIOD_US))
    if (ROOT / "cgroup.controllers").exists():  # v2: the cpu controller must be enabled for children
        if "cpu" not in (ROOT / "cgroup.controllers").read_text().split():
            raise CgroupError("the cgroup v2 root has no cpu controller")
        with contextlib.suppress(OSError):
            (ROOT / "cgroup.subtree_control").write_text("+cpu")
        group = ROOT / name
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        return group, group / "cgroup.procs"
    cpu = ROOT / "cpu"
    if not (cpu / "cpu.cfs_quota_us").exists():
        raise CgroupError(f"no cgroup cpu controller at {cpu}")
    group = cpu / name
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(quota))
    return group, group / "cgroup.procs"


@contextlib.contextmanager
def limit_cpu(pids: list[int], share: float) -> Iterator[None]:
    """Hold `pids` to `share` (0 < share < 1) of one core until the block ends; the group is removed after."""
    if not 0 < share < 1:
        raise ValueError(f"a CPU share must be between 0 and 1, got {share}")
    try:
        group, procs = _make(share)
        for pid in pids:
            procs.write_text(str(pid))
    except OSError as exc:
        raise CgroupError(f"cannot limit the server's CPU ({exc}); this needs root and the cgroup cpu "
                          "controller") from None
    try:
        yield
    finally:
        parent = group.parent / "cgroup.procs"
        for pid in pids:
            with contextlib.suppress(OSError):
                parent.write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
