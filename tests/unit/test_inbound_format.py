"""How a call judges inbound 0x10 audio from its byte rate (issue 14), on a fake clock: μ-law and slin16
mislabelled as slin are told from slin8, including 10 ms slin8 packets of the same 160-byte size."""

from __future__ import annotations

import pytest

from bridge.call import Call, CallHost
from bridge.config import BridgeConfig
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
    call = Call(_Host())
    for k in range(10):
        assert call._rate_check
        call._check_rate(Kind.AUDIO, frame_bytes, 1000.0 + k * every_s)
    assert not call._rate_check
    assert call._inbound == judged


def test_listeners_get_mulaw_decoded_once_judged():
    call = Call(_Host())
    got: list[tuple[bytes, int]] = []
    call.on_audio = lambda payload, rate: got.append((payload, rate))
    call._inbound = "ulaw"
    call._deliver(Kind.AUDIO, b"\xff" * 80 + b"\x00" * 80)  # μ-law silence, then full-scale negative
    [(payload, rate)] = got
    assert rate == 8000 and len(payload) == 320
    assert payload[:160] == bytes(160) and payload[160:162] == (-32124).to_bytes(2, "little", signed=True)
