"""How a call judges inbound 0x10 audio from its byte rate (issue 14), on a fake clock: μ-law and slin16
mislabelled as slin are told from slin8, including 10 ms slin8 packets of the same 160-byte size."""

from __future__ import annotations

import pytest
import structlog.testing

from bridge.call import Call, CallHost
from bridge.config import BridgeConfig
from bridge.inbound import FORMAT_ATTEMPTS, FORMAT_FRAMES, InboundFormat
from bridge.protocol import Kind


class _Clock:
    def add(self, call: Call) -> None: ...
    def discard(self, call: Call) -> None: ...
    def expedite(self, call: Call) -> None: ...


class _Host(CallHost):
    def __init__(self) -> None:
        self.config = BridgeConfig()
        self.clock = _Clock()  # type: ignore[assignment]


@pytest.mark.parametrize(
    "frame_bytes, every_s, judged",
    [
        (160, 0.020, "ulaw"),  # Dial(AudioSocket/...) without c(slin): 8000 B/s
        (320, 0.020, None),  # slin8 as labelled: 16000 B/s
        (160, 0.010, None),  # slin8 in 10 ms packets: the same size as μ-law, twice the rate
        (640, 0.020, "slin16"),  # slin16 labelled 0x10: 32000 B/s
        (160, 0.026, "ulaw"),  # μ-law arriving late (a loaded network): still in the window
    ],
)
def test_the_inbound_format_is_judged_by_byte_rate(frame_bytes, every_s, judged):
    judge = InboundFormat()
    ended = [judge.offer(Kind.AUDIO, frame_bytes, 1000.0 + k * every_s) for k in range(FORMAT_FRAMES)]
    assert ended == [False] * (FORMAT_FRAMES - 1) + [True]  # judged on the last of the frames, not before
    assert not judge.judging and judge.verdict == judged
    assert not judge.offer(Kind.AUDIO, frame_bytes, 1001.0)  # judged once


def test_a_bunched_window_is_judged_again_at_the_real_rate():
    # ten μ-law messages buffered and delivered at once (a hiccup as the call starts), then the real 20 ms
    judge = InboundFormat()
    assert not any(judge.offer(Kind.AUDIO, 160, 1000.0 + k * 0.0001) for k in range(FORMAT_FRAMES))
    assert judge.judging and judge.attempts == 1
    ended = [judge.offer(Kind.AUDIO, 160, 1001.0 + k * 0.020) for k in range(FORMAT_FRAMES)]
    assert ended[-1] and judge.verdict == "ulaw" and judge.attempts == 2


def test_audio_that_always_comes_bunched_is_taken_as_labelled():
    judge = InboundFormat()
    ended = [judge.offer(Kind.AUDIO, 160, 1000.0) for _ in range(FORMAT_ATTEMPTS * FORMAT_FRAMES)]
    assert ended.count(True) == 1 and ended[-1]
    assert judge.verdict is None and judge.attempts == FORMAT_ATTEMPTS and judge.bytes_per_s is None


def test_another_kind_first_ends_the_judgement_without_a_verdict():
    judge = InboundFormat()
    assert judge.offer(Kind.AUDIO_16K, 640, 1000.0)
    assert not judge.judging and judge.verdict is None


def test_a_call_holds_mulaw_back_until_judged_then_decodes_it_and_says_how_to_fix_the_dialplan(monkeypatch):
    ticks = iter(1000.0 + k * 0.020 for k in range(100))  # one 160-byte message every 20 ms: 8000 B/s
    monkeypatch.setattr("bridge.call.time.monotonic", lambda: next(ticks))
    call = Call(_Host())
    got: list[tuple[bytes, int]] = []
    call.on_audio = lambda payload, rate: got.append((payload, rate))
    with structlog.testing.capture_logs() as logs:
        for _ in range(FORMAT_FRAMES - 1):
            call._on_inbound_audio(Kind.AUDIO, b"\xff" * 160)
        assert got == []  # held back: read as slin, μ-law is loud noise
        call._on_inbound_audio(Kind.AUDIO, b"\xff" * 160)
    assert call._format.verdict == "ulaw"
    assert got == [(bytes(320), 8000)] * FORMAT_FRAMES  # μ-law silence, decoded, all of it
    [warning] = [e for e in logs if e["event"] == "inbound_looks_ulaw"]
    assert warning["bytes_per_s"] == 8000 and "c(slin)" in warning["hint"]


def test_listeners_get_mulaw_decoded_once_judged():
    call = Call(_Host())
    got: list[tuple[bytes, int]] = []
    call.on_audio = lambda payload, rate: got.append((payload, rate))
    call._format.verdict = "ulaw"
    call._deliver(Kind.AUDIO, b"\xff" * 80 + b"\x00" * 80)  # μ-law silence, then full-scale negative
    [(payload, rate)] = got
    assert rate == 8000 and len(payload) == 320
    assert payload[:160] == bytes(160) and payload[160:162] == (-32124).to_bytes(2, "little", signed=True)
