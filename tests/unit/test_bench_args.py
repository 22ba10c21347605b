"""The overhead benchmark's arguments and its CPU quota's checks (no process is started here)."""

from __future__ import annotations

import pytest

from bridge.sim.bench.cgroup import limit_cpu
from bridge.sim.bench.overhead import build_parser


def test_overload_cpu_takes_a_share_of_a_core() -> None:
    args = build_parser().parse_args(["--overload", "1300", "--overload-cpu", "0.5"])
    assert args.overload == 1300 and args.overload_cpu == 0.5
    assert build_parser().parse_args([]).overload_cpu == 1.0


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.2", "half"])
def test_overload_cpu_refuses_what_is_not_a_share(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--overload-cpu", bad])
    assert "--overload-cpu" in capsys.readouterr().err


@pytest.mark.parametrize("share", [0.0, 1.0, 2.0])
def test_a_quota_must_be_a_fraction_of_a_core(share: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"), limit_cpu([], share):
        pass
