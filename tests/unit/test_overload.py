"""The overload rule (`bridge.overload.OverloadDetector`) against a fake clock: when admission pauses, when it
resumes."""

from __future__ import annotations

import pytest

from bridge.overload import OverloadDetector, OverloadRule

STEP = 0.002
"""The media clock wakes every 2 ms phase."""

RULE = OverloadRule(late_s=0.010, window_s=0.3, enter_fraction=0.2, exit_fraction=0.02, calm_s=2.0,
                    min_samples=25, min_calls=50, bucket_s=0.05)


def feed(detector: OverloadDetector, start: float, seconds: float, late_every: int, calls: int = 100,
         late: float = 0.05) -> tuple[float, list[float]]:
    """Wake-ups every STEP from `start` for `seconds`, every `late_every`-th one `late` (0: none late).
    Returns the time after the last one and the times at which the state changed."""
    changes = []
    n = round(seconds / STEP)
    now = start
    for i in range(n):
        now = start + i * STEP
        is_late = late_every and i % late_every == 0
        if detector.observe(now, late if is_late else 0.001, calls):
            changes.append(now)
    return now + STEP, changes


def test_a_paced_clock_never_pauses_admission() -> None:
    detector = OverloadDetector(RULE)
    _, changes = feed(detector, 100.0, 10.0, late_every=0)
    assert changes == []
    assert not detector.is_overloaded


def test_occasional_late_wakeups_do_not_pause_admission() -> None:
    # one wake-up in ten late (a GC pass, call set-ups): below the fifth of the window the rule asks for
    detector = OverloadDetector(RULE)
    _, changes = feed(detector, 100.0, 10.0, late_every=10)
    assert changes == [] and not detector.is_overloaded


def test_a_single_long_stall_does_not_pause_admission() -> None:
    detector = OverloadDetector(RULE)
    now, _ = feed(detector, 100.0, 1.0, late_every=0)
    # a 40 ms stall: the ticks it held up come late, then the clock catches up
    for k in range(10):
        assert not detector.observe(now + k * STEP, 0.040 - k * 0.004, 100)
    _, changes = feed(detector, now + 10 * STEP, 2.0, late_every=0)
    assert changes == [] and not detector.is_overloaded


def test_a_stall_whose_catch_up_makes_a_fifth_of_the_window_late_does_not_pause_admission() -> None:
    # measured at 1,000 calls at the end of a set-up burst: a 60 ms stall, then the phases it held up served
    # back to back (1 ms apart), each 1 ms less late: 50 late wake-ups, a quarter of the window, all within
    # 50 ms (one or two of the window's slices); then the clock keeps time again
    detector = OverloadDetector(RULE)
    now, _ = feed(detector, 100.0, 1.0, late_every=0)
    for k in range(60):
        assert not detector.observe(now + k * 0.001, 0.060 - k * 0.001, 1000)
    total, late = detector.window(now + 0.059)
    assert late >= RULE.enter_fraction * total  # the fraction alone would have paused admission
    _, changes = feed(detector, now + 0.060, 2.0, late_every=0, calls=1000)
    assert changes == [] and not detector.is_overloaded


def test_lateness_in_most_of_the_window_pauses_admission() -> None:
    # late wake-ups in five of the six 50 ms slices, over a fifth of all wake-ups: the clock cannot keep time
    detector = OverloadDetector(RULE)
    now, _ = feed(detector, 100.0, 1.0, late_every=0)
    now, changes = feed(detector, now, 0.25, late_every=3)
    assert len(changes) == 1 and detector.is_overloaded


def test_a_saturated_clock_pauses_admission_within_the_window() -> None:
    detector = OverloadDetector(RULE)
    now, _ = feed(detector, 100.0, 1.0, late_every=0)
    _, changes = feed(detector, now, 1.0, late_every=1)
    assert len(changes) == 1
    # a fifth of a 0.3 s window of late wake-ups: well within the window's length
    assert changes[0] - now < RULE.window_s
    assert detector.is_overloaded and detector.since == changes[0] and detector.episodes == 1


def test_too_few_calls_never_pause_admission() -> None:
    detector = OverloadDetector(RULE)
    _, changes = feed(detector, 100.0, 2.0, late_every=1, calls=RULE.min_calls - 1)
    assert changes == [] and not detector.is_overloaded
    _, changes = feed(detector, 102.0, 1.0, late_every=1, calls=RULE.min_calls)
    assert len(changes) == 1 and detector.is_overloaded


def test_too_few_wakeups_never_pause_admission() -> None:
    detector = OverloadDetector(RULE)
    # every wake-up late, but only 20 of them in the window (fewer than min_samples)
    for i in range(20):
        assert not detector.observe(100.0 + i * 0.01, 0.05, 100)
    assert not detector.is_overloaded


def test_admission_resumes_only_after_calm_s_of_calm() -> None:
    detector = OverloadDetector(RULE)
    now, changes = feed(detector, 100.0, 0.5, late_every=1)
    assert len(changes) == 1
    calm_from = now
    now, changes = feed(detector, now, 1.5, late_every=0)
    assert changes == [] and detector.is_overloaded  # the late wake-ups leave the window, then 2 s of calm
    now, changes = feed(detector, now, 1.5, late_every=0)
    assert len(changes) == 1 and not detector.is_overloaded
    # calm means: the window below exit_fraction; the late wake-ups left it at most window_s after calm_from
    assert RULE.calm_s <= changes[0] - calm_from <= RULE.calm_s + RULE.window_s + RULE.bucket_s
    assert detector.since is None


def test_lateness_between_the_thresholds_keeps_admission_paused() -> None:
    # hysteresis: 10 % late is not enough to pause, but too much to resume
    detector = OverloadDetector(RULE)
    now, changes = feed(detector, 100.0, 0.5, late_every=1)
    assert len(changes) == 1
    now, changes = feed(detector, now, 10.0, late_every=10)
    assert changes == [] and detector.is_overloaded


def test_a_relapse_restarts_the_calm_period() -> None:
    detector = OverloadDetector(RULE)
    now, _ = feed(detector, 100.0, 0.5, late_every=1)
    now, changes = feed(detector, now, 1.8, late_every=0)
    assert changes == []
    now, changes = feed(detector, now, 0.1, late_every=1)  # late again before the calm period ended
    assert changes == [] and detector.is_overloaded
    relapse_end = now
    now, changes = feed(detector, now, 3.0, late_every=0)
    assert len(changes) == 1
    assert changes[0] - relapse_end >= RULE.calm_s


def test_no_wakeups_at_all_count_as_calm() -> None:
    # every call ended while paused: the clock stops waking, and the timer's question must still resume
    detector = OverloadDetector(RULE)
    now, _ = feed(detector, 100.0, 0.5, late_every=1)
    assert detector.overloaded(now + 0.1)
    assert detector.overloaded(now + RULE.window_s + RULE.bucket_s)  # calm starts once the window is empty
    assert not detector.overloaded(now + RULE.window_s + RULE.bucket_s + RULE.calm_s)
    assert not detector.is_overloaded


def test_window_counts_only_the_last_window_s() -> None:
    detector = OverloadDetector(RULE)
    feed(detector, 100.0, 1.0, late_every=2)
    total, late = detector.window(101.0)
    # the window is window_s to within one bucket (the newest slice has just begun): 125-150 wake-ups of 2 ms
    assert 125 <= total <= 150 and abs(late - total / 2) <= 1  # every other one late
    assert detector.window(105.0) == (0, 0)


def test_a_resynchronised_tick_counts_as_late() -> None:
    # the clock reports how far behind a resynchronised wake-up was (over 100 ms), far above late_s
    detector = OverloadDetector(RULE)
    for i in range(100):  # 200 ms of wake-ups, each reporting the resynchronised 150 ms
        detector.observe(100.0 + i * STEP, 0.15, 100)
    assert detector.is_overloaded


@pytest.mark.parametrize("kwargs", [
    {"late_s": 0}, {"bucket_s": 0}, {"bucket_s": 1.0, "window_s": 0.3}, {"enter_fraction": 0.01},
    {"exit_fraction": -0.1}, {"enter_fraction": 1.5}, {"calm_s": -1}, {"min_samples": 0}, {"min_calls": -1},
    {"enter_buckets": 0}, {"enter_buckets": 7},
])
def test_a_bad_rule_is_refused_with_its_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        OverloadRule(**kwargs)  # type: ignore[arg-type]


BUSY_RULE = OverloadRule(late_s=0.010, window_s=0.3, enter_fraction=0.2, exit_fraction=0.02, calm_s=2.0,
                         min_samples=25, min_calls=50, bucket_s=0.05, busy_enter=0.85, busy_exit=0.70)


def feed_busy(detector: OverloadDetector, start: float, seconds: float, share: float, calls: int = 100,
              cpu0: float = 0.0) -> tuple[float, float, list[float]]:
    """Punctual wake-ups every STEP, the loop's thread using `share` of a core, its CPU time given once per
    bucket (as the server samples it). Returns the time and CPU time after the last one, and the changes."""
    changes = []
    now, cpu = start, cpu0
    next_sample = start
    for i in range(round(seconds / STEP)):
        now = start + i * STEP
        cpu = cpu0 + (now - start) * share
        sample = None
        if now >= next_sample:
            sample, next_sample = cpu, now + BUSY_RULE.bucket_s
        if detector.observe(now, 0.001, calls, sample):
            changes.append(now)
    return now + STEP, cpu, changes


def test_a_nearly_full_loop_pauses_admission_before_any_frame_is_late() -> None:
    detector = OverloadDetector(BUSY_RULE)
    now, cpu, changes = feed_busy(detector, 100.0, 5.0, share=0.6)
    assert changes == [] and detector.busy(now - STEP) == pytest.approx(0.6)
    _, _, changes = feed_busy(detector, now, 1.0, share=0.9, cpu0=cpu)
    assert len(changes) == 1 and detector.is_overloaded
    # within the window's length of the loop filling up (no lateness at all)
    assert changes[0] - now <= BUSY_RULE.window_s + BUSY_RULE.bucket_s


def test_busy_admission_resumes_only_well_below_the_threshold() -> None:
    detector = OverloadDetector(BUSY_RULE)
    now, cpu, changes = feed_busy(detector, 100.0, 1.0, share=0.95)
    assert len(changes) == 1
    now, cpu, changes = feed_busy(detector, now, 5.0, share=0.8, cpu0=cpu)  # below enter, above exit
    assert changes == [] and detector.is_overloaded
    start = now
    now, cpu, changes = feed_busy(detector, now, 5.0, share=0.5, cpu0=cpu)
    assert len(changes) == 1 and not detector.is_overloaded
    assert BUSY_RULE.calm_s <= changes[0] - start <= BUSY_RULE.calm_s + BUSY_RULE.window_s + 0.1


def test_busy_with_few_calls_or_the_rule_off_never_pauses() -> None:
    few = OverloadDetector(BUSY_RULE)
    _, _, changes = feed_busy(few, 100.0, 3.0, share=1.0, calls=BUSY_RULE.min_calls - 1)
    assert changes == []
    off = OverloadDetector(RULE)  # busy_enter 0
    _, _, changes = feed_busy(off, 100.0, 3.0, share=1.0)
    assert changes == []


def test_busy_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="busy_exit <= busy_enter"):
        OverloadRule(busy_enter=0.5, busy_exit=0.6)
    with pytest.raises(ValueError, match="busy_enter <= 1"):
        OverloadRule(busy_enter=1.5, busy_exit=0.5)


def test_the_cpu_limit_is_read_from_the_process_cgroup(tmp_path) -> None:
    from bridge.server import cpu_limit

    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    (root / "bench").mkdir(parents=True)
    proc.write_text("0::/bench\n")
    (root / "bench" / "cpu.max").write_text("50000 100000\n")  # v2: half a core
    assert cpu_limit(proc, root) == 0.5
    (root / "bench" / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(proc, root) == 1.0
    (root / "cpu,cpuacct" / "pod").mkdir(parents=True)  # v1
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/pod\n")
    (root / "cpu,cpuacct" / "pod" / "cpu.cfs_quota_us").write_text("2500\n")
    (root / "cpu,cpuacct" / "pod" / "cpu.cfs_period_us").write_text("10000\n")
    assert cpu_limit(proc, root) == 0.25
    (root / "cpu,cpuacct" / "pod" / "cpu.cfs_quota_us").write_text("400000\n")  # four cores: the loop is one
    assert cpu_limit(proc, root) == 1.0
    assert cpu_limit(tmp_path / "missing", root) == 1.0
