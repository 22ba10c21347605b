"""Fixtures of the real-Asterisk tests: one stack per session (see harness.py), a capture and SIP phones
per test, and a timing report (RTP inter-arrival at the phone) printed at the end of the run."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asterisk.harness import Stack
from asterisk.listen import Heard
from asterisk.phone import CallView, Capture, Phone, Spec, audiosocket_connections, call_view

SETTLE_S = 0.25
"""After the phones are done, how long the capture goes on: the bridge reads a paced call on its media clock's
tick, so it sees Asterisk close the AudioSocket connection and sends its own FIN up to 20 ms later."""

TIMINGS: list[dict] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run only when asked for by marker (`-m asterisk`): pyproject's addopts has `-m 'not asterisk'`, but
    any other `-m` (say `-m 'not slow'`) replaces it, which would start Asterisk unasked."""
    if "asterisk" in (config.option.markexpr or ""):
        return
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.path)).parents]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip("the real-Asterisk tests need root (chroot, mounts, network namespaces)")
    s = Stack(tmp_path_factory.mktemp("asterisk-stack"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@dataclass
class CallResult:
    phone: Phone
    sipp_status: int
    view: CallView
    heard: Heard
    audiosocket: list[dict] = field(default_factory=list)
    packets: list = field(default_factory=list)  # the whole capture (all calls placed together)


class Calls:
    """Places calls (one SIPp per phone, all at once) under one capture, and reads each call back."""

    def __init__(self, stack: Stack, workdir: Path, test_name: str) -> None:
        self.stack = stack
        self.workdir = workdir
        self.test_name = test_name
        self.captures: list[Capture] = []
        self.phones: list[Phone] = []
        self.count = 0

    def place(self, *specs: Spec, timeout: float = 90) -> list[CallResult]:
        capture = Capture(self.stack.netns, self.workdir / f"capture-{len(self.captures)}.pcap")
        self.captures.append(capture)
        phones = []
        for spec in specs:
            n = self.count
            self.count += 1
            phone = Phone(self.stack.netns, self.workdir, f"phone{n}", spec.extension, self.stack.password,
                          sip_port=5070 + n, media_port=30000 + 10 * n, says=spec.says, send_rtp=spec.send_rtp,
                          rtp_ms=spec.rtp_ms, hang_up_after_ms=spec.hang_up_after_ms)
            self.phones.append(phone)
            phones.append(phone.start())
        statuses = [phone.wait(timeout) for phone in phones]
        time.sleep(SETTLE_S)  # the last TCP segments of calls the phones ended (the bridge's FIN) are captured too
        packets = capture.stop()
        self.captures.remove(capture)
        for proc in self.stack.procs:
            proc.check_alive()  # neither the bridge nor Asterisk died under the calls
        conns = audiosocket_connections(packets)
        results = []
        for phone, status in zip(phones, statuses, strict=True):
            view = call_view(packets, phone.sip_port)
            results.append(CallResult(phone, status, view, Heard(view), conns, packets))
            _record_timing(self.test_name, phone, results[-1].heard)
        return results

    def close(self) -> None:
        for phone in self.phones:
            phone.stop()
        for capture in self.captures:
            capture.proc.stop(timeout=5, sig=2)


@pytest.fixture
def calls(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest):
    c = Calls(stack, tmp_path, request.node.name)
    try:
        yield c
    finally:
        c.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _record_timing(test: str, phone: Phone, heard: Heard) -> None:
    view = heard.view
    gaps = view.inter_arrival_ms()
    TIMINGS.append({
        "test": test, "phone": phone.name, "extension": phone.extension, "packets": len(view.heard),
        "first_audio_ms": round((view.heard[0].t - view.invite_ok_t) * 1000, 1) if view.heard else None,
        "inter_arrival_p50_ms": round(percentile(gaps, 0.50), 2),
        "inter_arrival_p99_ms": round(percentile(gaps, 0.99), 2),
        "inter_arrival_max_ms": round(max(gaps), 2) if gaps else None,
        "_gaps": gaps,
        "_heard": heard,
    })


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not TIMINGS:
        return
    tr = terminalreporter
    tr.section("RTP timing at the phone (what Asterisk sent; reported, not asserted)")
    for row in TIMINGS:
        tr.write_line(
            f"{row['test']:<58} {row['phone']:<8} {row['extension']} packets {row['packets']:>4}  "
            f"first audio {row['first_audio_ms']} ms  inter-arrival p50 {row['inter_arrival_p50_ms']} "
            f"p99 {row['inter_arrival_p99_ms']} max {row['inter_arrival_max_ms']} ms"
            + (f"  first {row['_heard'].head_lost} frame(s) of the call lost" if row["_heard"].head_lost else "")
        )
    all_gaps = [g for row in TIMINGS for g in row["_gaps"]]
    tr.write_line(f"all calls: {len(all_gaps)} intervals, p50 {percentile(all_gaps, 0.5):.2f} ms, "
                  f"p99 {percentile(all_gaps, 0.99):.2f} ms, max {max(all_gaps):.2f} ms")
    out = os.environ.get("VOICE_BRIDGE_ASTERISK_TIMINGS")
    if out:
        Path(out).write_text(json.dumps([{**{k: v for k, v in r.items() if not k.startswith("_")},
                                          "head_lost_frames": r["_heard"].head_lost} for r in TIMINGS], indent=1))
