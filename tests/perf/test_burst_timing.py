"""An ongoing call keeps its pacing through a burst of thousands of connections (marker `perf`: the callers
share the server's event loop, so a loaded machine stretches the gap). What holds on any machine is tested in
tests/integration/bridge/test_bad_input.py."""

from __future__ import annotations

from support.calls import call_through_a_burst


async def test_a_burst_of_connections_leaves_no_long_gap_in_an_ongoing_call(start_server):
    server = await start_server(max_calls=5000)
    report = await call_through_a_burst(server)
    assert report.hangup == "caller" and report.error is None
    assert report.worst_gap_ms < 500, report.worst_gap_ms
