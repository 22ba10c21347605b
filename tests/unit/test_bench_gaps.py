"""`bridge.sim.bench.gaps`: each call's worst gap and when it fell, on the clock the calls share."""

from __future__ import annotations

from bridge.sim.bench.gaps import summary, worst_gaps
from bridge.sim.caller import CallReport


def report(uuid_at: float, arrivals_ms: list[float]) -> CallReport:
    return CallReport(uuid="u", hangup="caller", error=None, duration_s=1.0, first_frame_ms=arrivals_ms[0],
                      first_audio_ms=None, realtime_ratio=None, worst_burst_frames=1, worst_gap_ms=None,
                      frames=len(arrivals_ms), bytes=320 * len(arrivals_ms), frames_sent=0, dtmf_sent=[],
                      received_hangup=False, arrivals_ms=arrivals_ms, uuid_at=uuid_at)


def test_a_stall_heard_by_every_call_falls_in_one_second_on_the_shared_clock() -> None:
    # two calls started 1.5 s apart; both hear a 120 ms gap from the same instant, 3.18 s after the first UUID
    first = report(100.0, [20.0 * k for k in range(160)] + [3180.0 + 120.0])
    second = report(101.5, [20.0 * k for k in range(85)] + [1680.0 + 120.0])
    gaps = worst_gaps([first, second])
    assert [round(g[0]) for g in gaps] == [120, 120]
    assert [round(g[1], 2) for g in gaps] == [3.18, 3.18]
    assert summary(gaps) == {"calls": 2, "worst_gap_ms": 120.0, "median_calls_worst_gap_ms": 120.0,
                             "worst_gaps_by_second": {3: 2}}


def test_calls_with_fewer_than_two_frames_have_no_gap() -> None:
    assert worst_gaps([report(0.0, [5.0])]) == []
    assert worst_gaps([]) == []
    assert summary([])["worst_gap_ms"] is None
