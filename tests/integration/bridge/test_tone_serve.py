"""`serve --tone HZ` on a real server: the caller hears the whole cycle in order, and the command names the
option a frequency it cannot play was given to. The tone's frames themselves: tests/unit/test_tone.py."""

from __future__ import annotations

from bridge.protocol import FRAME_BYTES
from bridge.server import tone_handler
from bridge.sim.caller import place_call
from support.process import run_serve
from support.tone import continuous_sine, samples


async def test_the_server_plays_the_whole_cycle_in_order(start_server):
    server = await start_server(tone_handler(410))
    report = await place_call("127.0.0.1", server.port, duration_s=0.6, keep_audio=True)
    silence = bytes(FRAME_BYTES)
    frames = [report.audio[k:k + FRAME_BYTES] for k in range(0, len(report.audio), FRAME_BYTES)]
    heard = b"".join(f for f in frames if f != silence)  # the clock's silence before the handler starts
    assert len(heard) >= 10 * FRAME_BYTES
    assert samples(heard) == continuous_sine(410, len(heard) // 2)


async def test_serve_names_the_option_a_bad_tone_was_given_to():
    status, err = await run_serve("--bridge-port", "0", "--tone", "410.37")
    assert status == 2
    assert "argument --tone: a 410.37 Hz tone does not repeat within 5 s" in err
