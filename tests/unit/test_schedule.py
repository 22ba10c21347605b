"""The media clock's rules, driven by a fake clock: every figure below is exact, no socket, no sleep.

`MediaSchedule` never reads the time: each test says what `now` is, so phases, joins, catch-up spacing,
resynchronisation and the expedited first frame are checked to the microsecond instead of against a
busy machine's wall time (the real-loop tests are in tests/integration/bridge/test_clock_driver.py, the
timing ones in tests/perf/test_clock_timing.py).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.schedule import Histogram, MediaSchedule

EPS = 1e-9
"""Floating-point slack on times that are sums of 2 ms steps; far below any rule's granularity."""


class Driver:
    """What `bridge.clock.MediaClock` does, with a fake clock: wake exactly when told, unless held up."""

    def __init__(self, schedule: MediaSchedule[str], now: float = 0.0) -> None:
        self.schedule = schedule
        self.now = now
        self.frames: dict[str, list[float]] = defaultdict(list)
        self.ticks: list[tuple[float, tuple[str, ...], float, float]] = []
        """(now, members, late, behind) of every served tick."""

    def run_until(self, until: float) -> None:
        """Serve every tick due up to `until` (inclusive), each at the moment it becomes due."""
        while True:
            wake = self.schedule.next_wake()
            if wake is None or wake > until + EPS:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, wake)
            self.serve()

    def hold(self, seconds: float) -> None:
        """The event loop was blocked: time passes and nothing is served."""
        self.now += seconds

    def serve(self) -> None:
        tick = self.schedule.take_due(self.now)
        assert tick is not None, f"the tick announced for {self.schedule.next_wake()} is not due at {self.now}"
        self.ticks.append((self.now, tick.members, tick.late, tick.behind))
        for member in tick.members:
            self.frames[member].append(self.now)


def most_frames_in_a_period(times: list[float], period: float = 0.02) -> int:
    """The most frames inside any half-open window [t, t + period)."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(1 for u in times[i:] if u < t + period - EPS))
    return best


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"slots": 0}, "slots"), ({"frame_s": 0.0}, "frame_s"), ({"resync_s": -1.0}, "resync_s"),
     ({"tolerance_s": 0.002}, "tolerance_s")],
)
def test_bad_settings_are_refused_with_their_name(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        MediaSchedule(**kwargs)  # type: ignore[arg-type]


# --- joining and phases ------------------------------------------------------------------------------


def test_an_idle_schedule_has_no_wake_up_and_a_first_member_is_due_at_once() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    assert s.next_wake() is None
    assert s.add("a", 5.0) is True  # the driver is parked: it must wake
    assert s.phase_of("a") == 0
    assert s.next_wake() == pytest.approx(5.0, abs=EPS)
    tick = s.take_due(5.0)
    assert tick is not None and tick.members == ("a",) and tick.late == pytest.approx(0.0, abs=EPS)
    assert tick.behind == 0.0


def test_adding_twice_changes_nothing() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    s.add("a", 0.0)
    assert s.add("a", 0.0) is False
    assert len(s) == 1 and s.phase_sizes()[0] == 1


def test_each_member_gets_exactly_one_frame_per_period_on_an_absolute_schedule() -> None:
    """Served 1.5 ms late every time, the schedule does not drift: targets stay at t0 + n * 20 ms."""
    s: MediaSchedule[str] = MediaSchedule()
    s.add("a", 1.0)
    for n in range(500):
        wake = s.next_wake()
        assert wake is not None and wake == pytest.approx(1.0 + n * 0.02, abs=1e-7)
        tick = s.take_due(wake + 0.0015)
        assert tick is not None and tick.members == ("a",)
        assert tick.late == pytest.approx(0.0015, abs=1e-7)
    assert s.ticks == 500 and s.frames_written == 500 and s.resyncs == 0


def test_a_joiner_takes_the_soonest_open_phase_and_the_driver_is_told_to_wake_for_it() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.0051)  # tick 0 served; phases 1-9 are empty, so the driver sleeps toward 0.020
    assert s.next_wake() == pytest.approx(0.02, abs=EPS)
    assert s.add("b", 0.0051) is True  # the first tick not in the past: 0.006 (phase 3), before 0.020
    assert s.phase_of("b") == 3
    assert s.next_wake() == pytest.approx(0.006, abs=EPS)
    d.run_until(0.05)
    assert d.frames["b"] == pytest.approx([0.006, 0.026, 0.046], abs=EPS)
    assert d.frames["a"] == pytest.approx([0.0, 0.02, 0.04], abs=EPS)


def test_a_joiner_passes_over_a_phase_fuller_than_the_average_allows() -> None:
    """With 2 members, the limit is 2 * 5 // (4 * 10) + 1 = 1: a phase holding 2 is passed over."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a1", 0.0)
    s.add("a2", 0.0)  # phase 0 holds 1 = the limit for 1 member: joins it
    assert s.phase_of("a1") == s.phase_of("a2") == 0
    d.run_until(0.019)
    assert s.add("b", 0.019) is False  # its tick (0.022) is after the one the driver sleeps toward
    assert s.phase_of("b") == 1
    assert s.next_wake() == pytest.approx(0.02, abs=EPS)


def test_the_join_limit_grows_with_the_average() -> None:
    """12 members joining at one instant: the limit is 1 for the first 8 (two per phase), then 2."""
    s: MediaSchedule[str] = MediaSchedule()
    for i in range(12):
        s.add(f"m{i}", 0.0)
    assert s.phase_sizes() == [3, 3, 3, 3, 0, 0, 0, 0, 0, 0]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.05), st.booleans()), min_size=1, max_size=300))
def test_batches_stay_within_a_quarter_of_the_average(steps: list[tuple[float, bool]]) -> None:
    """Whatever the join times (and leaves), a phase never holds more than a quarter above the average + 2."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    joined: list[str] = []
    for i, (wait, leave) in enumerate(steps):
        d.run_until(d.now + wait)
        if leave and joined:
            s.discard(joined.pop(0))
        else:
            name = f"m{i}"
            s.add(name, d.now)
            joined.append(name)
            limit = (len(s) - 1) * 5 // (4 * s.slots) + 1
            assert s.phase_sizes()[s.phase_of(name)] <= limit + 1  # type: ignore[index]
    assert sum(s.phase_sizes()) == len(joined)


def test_a_discarded_member_gets_no_more_frames_and_an_empty_schedule_parks() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a", 0.0)
    s.add("b", 0.0)
    d.run_until(0.03)
    s.discard("a")
    s.discard("a")  # idempotent
    d.run_until(0.07)
    assert d.frames["a"] == pytest.approx([0.0, 0.02], abs=EPS)
    assert d.frames["b"] == pytest.approx([0.0, 0.02, 0.04, 0.06], abs=EPS)
    s.discard("b")
    assert s.next_wake() is None and s.take_due(1.0) is None


def test_rejoining_after_a_long_idle_starts_now_without_a_resync() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.05)
    s.discard("a")
    d.now = 10.0
    assert s.add("b", 10.0) is True
    assert s.next_wake() == pytest.approx(10.0, abs=EPS)
    d.run_until(10.05)
    assert d.frames["b"] == pytest.approx([10.0, 10.02, 10.04], abs=EPS)
    assert s.resyncs == 0 and all(late < 1e-6 for _, _, late, _ in d.ticks)


def test_resume_restarts_the_schedule_from_now() -> None:
    """For a driver that was stopped with members on the schedule: the missed ticks are not owed."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.03)
    s.resume(7.0)
    assert s.next_wake() == pytest.approx(7.0, abs=EPS)  # the next tick is due now, not 6.97 s ago
    d.now = 7.0
    d.run_until(7.05)
    assert d.frames["a"] == pytest.approx([0.0, 0.02, 7.0, 7.02, 7.04], abs=EPS)
    assert s.resyncs == 0


# --- waking early, lateness, statistics --------------------------------------------------------------


def test_a_tick_is_not_served_before_its_time_except_within_the_tolerance() -> None:
    s: MediaSchedule[str] = MediaSchedule(tolerance_s=0.0002)
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.0)
    assert s.take_due(0.0197) is None  # 0.3 ms early: not served, nothing advanced
    assert s.next_wake() == pytest.approx(0.02, abs=EPS)
    tick = s.take_due(0.0199)  # 0.1 ms early: a timer's rounding, served
    assert tick is not None and tick.members == ("a",)
    assert tick.late == pytest.approx(-0.0001, abs=EPS)
    assert s.lateness.max == 0.0  # negative lateness is recorded as on time


def test_statistics_count_ticks_frames_members_and_lateness() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    for name in ("a", "b", "c"):
        s.add(name, 0.0)  # a, b in phase 0; c in phase 1
    for _ in range(4):  # phase 0 at 0, 20; phase 1 at 2, 22 ms: each served 1 ms late
        wake = s.next_wake()
        assert wake is not None
        assert s.take_due(wake + 0.001) is not None
    assert s.ticks == 4 and s.frames_written == 6 and s.max_calls_seen == 3
    assert s.lateness.count == 4 and s.lateness.max == pytest.approx(0.001, abs=EPS)
    stats = s.stats()
    assert stats["ticks"] == 4 and stats["frames"] == 6 and stats["calls"] == 3 and stats["max_calls"] == 3
    assert stats["lateness"] == {"p50_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0, "mean_ms": 1.0}
    s.discard("c")
    s.reset_stats()
    assert s.ticks == s.frames_written == s.resyncs == s.lateness.count == 0
    assert s.max_calls_seen == 2  # the members still on the schedule


def test_histogram_percentiles() -> None:
    h = Histogram()
    for i in range(100):
        h.observe(i / 10000)  # 0 .. 9.9 ms
    assert h.count == 100
    assert h.percentile(50) == pytest.approx(0.005, abs=0.0002)
    assert h.percentile(99) == pytest.approx(0.0099, abs=0.0002)
    h.observe(3.0)  # beyond the top: the overflow bin, reported as the max
    assert h.max == 3.0 and h.percentile(100) == 3.0
    h.reset()
    assert h.count == 0 and h.percentile(50) == 0.0


# --- catch-up and resynchronisation ------------------------------------------------------------------


def test_after_a_hold_up_missed_ticks_are_caught_up_half_a_period_apart() -> None:
    """Held 70 ms (below the 100 ms threshold): the 3 missed frames follow every 10 ms, none is lost."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.1)  # frames at 0 .. 100 ms
    d.hold(0.07)  # the loop is blocked until 170 ms: the ticks of 120, 140 and 160 ms are missed
    d.serve()  # the tick of 120 ms, 50 ms late
    d.run_until(0.3)
    expected = [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.17, 0.18, 0.19, 0.2, 0.21, 0.22, 0.24, 0.26, 0.28, 0.3]
    assert d.frames["a"] == pytest.approx(expected, abs=EPS)
    assert [round(late, 6) for _, _, late, _ in d.ticks[6:12]] == [0.05, 0.04, 0.03, 0.02, 0.01, 0.0]
    assert s.resyncs == 0
    assert min(gaps(d.frames["a"])) >= 0.01 - EPS
    assert most_frames_in_a_period(d.frames["a"]) == 2


def test_the_catch_up_spacing_holds_even_when_the_driver_asks_early() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.1)
    d.hold(0.07)
    d.serve()  # at 170 ms
    assert s.next_wake() == pytest.approx(0.18, abs=EPS)  # the tick of 140 ms: no sooner than 170 + 10
    assert s.take_due(0.1799) is None  # the tolerance is for timers, never for the spacing
    wake = s.next_wake()
    assert wake is not None and s.take_due(wake) is not None


@pytest.mark.parametrize(("held_s", "resyncs"), [(0.099, 0), (0.101, 1)])
def test_resynchronisation_starts_just_beyond_the_threshold(held_s: float, resyncs: int) -> None:
    """A tick served more than `resync_s` (100 ms) late restarts the schedule; one at 99 ms is caught up."""
    s: MediaSchedule[str] = MediaSchedule(slots=1)
    d = Driver(s)
    s.add("a", 0.0)
    d.run_until(0.0)
    d.hold(0.02 + held_s)  # the tick of 20 ms is served `held_s` late
    d.serve()
    now, _, late, behind = d.ticks[-1]
    assert s.resyncs == resyncs
    if resyncs:
        assert behind == pytest.approx(held_s, abs=EPS) and late == 0.0
        assert s.lateness.max == 0.0  # the restarted tick is on time by definition
        assert s.next_wake() == pytest.approx(now + 0.02, abs=EPS)  # the missed frames are dropped
    else:
        assert behind == 0.0 and late == pytest.approx(held_s, abs=EPS)
        assert s.next_wake() == pytest.approx(now + 0.01, abs=EPS)  # the missed frames are caught up


def test_a_resynchronisation_with_every_phase_busy_never_bursts() -> None:
    """Held 300 ms with 40 members over all phases: the first tick resyncs, nobody gets > 2 frames / 20 ms."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    for i in range(40):
        d.run_until(i * 0.0007)
        s.add(f"m{i}", d.now)
    assert min(s.phase_sizes()) >= 1
    d.run_until(0.2)
    d.hold(0.3)
    d.run_until(1.0)
    assert s.resyncs == 1
    for times in d.frames.values():
        assert min(gaps(times)) >= 0.01 - EPS
        assert most_frames_in_a_period(times) <= 2
        after = [t for t in times if t > 0.55]
        assert gaps(after) == pytest.approx([0.02] * (len(after) - 1), abs=EPS)  # back on the grid


# --- the expedited first frame -----------------------------------------------------------------------


def _two_in_phase_zero() -> tuple[MediaSchedule[str], Driver]:
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("fast", 0.0)
    s.add("slow", 0.0)
    d.run_until(0.041)  # frames at 0, 20, 40 ms
    return s, d


def test_expedite_moves_a_member_to_the_soonest_phase_half_a_period_after_its_last_frame() -> None:
    s, d = _two_in_phase_zero()
    # last frame at 40 ms: the soonest tick at or after 40 + 10 + 0.2 ms is 52 ms (phase 6), before its
    # own phase's 60 ms
    assert s.expedite("fast", 0.041) is True
    assert s.phase_of("fast") == 6 and s.phase_of("slow") == 0
    assert s.next_wake() == pytest.approx(0.052, abs=EPS)
    d.run_until(0.1)
    assert d.frames["fast"] == pytest.approx([0.0, 0.02, 0.04, 0.052, 0.072, 0.092], abs=EPS)
    assert d.frames["slow"] == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1], abs=EPS)


def test_expedite_passes_over_phases_holding_the_average_plus_one() -> None:
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("fast", 0.0)
    s.add("slow", 0.0)
    d.run_until(0.0111)
    for name in ("x1", "x2", "x3"):  # the first open tick is 12 ms (phase 6): x1, x2 there, x3 in phase 7
        s.add(name, 0.0111)
    assert s.phase_sizes() == [2, 0, 0, 0, 0, 0, 2, 1, 0, 0]
    d.run_until(0.041)
    # 5 members: the limit is ceil(5 / 10) + 1 = 2; phase 6 holds 2 and is passed over
    assert s.expedite("fast", 0.041) is True
    assert s.phase_of("fast") == 7
    assert s.next_wake() == pytest.approx(0.052, abs=EPS)  # phase 6's tick comes first, for x1 and x2
    d.run_until(0.06)
    assert d.frames["fast"][-1] == pytest.approx(0.054, abs=EPS)


def test_expedite_does_nothing_when_the_own_phase_is_next_or_for_a_stranger() -> None:
    s, d = _two_in_phase_zero()
    d.run_until(0.0595)
    assert s.expedite("fast", 0.0595) is False  # its own tick (60 ms) is the first open one
    assert s.expedite("nobody", 0.0595) is False
    assert s.phase_of("fast") == 0


def test_expedite_never_brings_a_frame_within_half_a_period_of_the_last() -> None:
    """Expedited right after its frame: the 10 ms (plus tolerance) rule, not the next free phase, decides."""
    s, d = _two_in_phase_zero()
    d.now = 0.0405
    assert s.expedite("fast", 0.0405) is True  # phases 1..5 (42..50 ms) are too close to 40 ms
    assert s.phase_of("fast") == 6
    d.run_until(0.2)
    assert min(gaps(d.frames["fast"])) >= 0.01 - EPS
    assert most_frames_in_a_period(d.frames["fast"]) <= 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["wait", "hold", "add", "leave", "expedite"]),
                          st.floats(0.0, 0.2), st.integers(0, 11)), max_size=80))
def test_no_member_ever_gets_more_than_two_frames_in_a_period(
        ops: list[tuple[str, float, int]]) -> None:
    """Any mix of joins, leaves, expedites, hold-ups and resyncs: frames >= 10 ms apart, <= 2 per 20 ms."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    left: set[str] = set()
    for op, seconds, who in ops:
        name = f"m{who}"
        if op == "add" and name in left:
            continue  # a call never comes back: a new membership would be a new call
        if op == "wait":
            d.run_until(d.now + seconds / 4)
        elif op == "hold":
            d.hold(seconds)
        elif op == "add":
            s.add(name, d.now)
        elif op == "leave":
            s.discard(name)
            left.add(name)
        else:
            s.expedite(name, d.now)
        if s.next_wake() is not None and s.next_wake() <= d.now:  # type: ignore[operator]
            d.serve()  # a held-up driver serves the overdue tick the moment it runs again
    d.run_until(d.now + 0.5)
    for times in d.frames.values():
        assert not times or min(gaps(times), default=math.inf) >= 0.01 - EPS
        assert most_frames_in_a_period(times) <= 2


def test_a_second_expedite_keeps_the_spacing_from_the_frame_before_the_first() -> None:
    """Found by the property test: served at 0, expedited twice at once; the second move must not land 2 ms on."""
    s: MediaSchedule[str] = MediaSchedule()
    d = Driver(s)
    s.add("m", 0.0)
    d.serve()
    s.expedite("m", 0.0)
    s.expedite("m", 0.0)
    d.run_until(0.2)
    assert min(gaps(d.frames["m"])) >= 0.01 - EPS
