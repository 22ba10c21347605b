"""The abuse set (issue 12): a live `python -m bridge serve` (private Redis, the ElevenLabs emulator) is hit
with early hang-ups, a DTMF flood, silent connections at the cap and garbage while normal calls play.

Each test asserts the normal calls' pacing with generous bounds (a loaded CI machine must not break them:
realtime ratio within 0.9-1.1, no gap over 500 ms) and that nothing is left behind: afterwards
`voicebridge_active_calls` is 0, no connection is pending and `voicebridge_tasks` (live asyncio tasks) is
back to its idle value. The rules themselves (the DTMF token bucket) are tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Settings
from bridge.inbound import DTMF_BURST, DTMF_FLOOD_EXCESS, KeyRateLimit
from bridge.protocol import encode_uuid
from bridge.server import FullCollectionPolicy, GcPauses
from bridge.sim.caller import CallReport, place_call
from support.process import ServeProcess, clean_env, get, load_fragments
from voice.emulators.elevenlabs import DEFAULT_API_KEY, Emulator

LOOPING = """
start = "hello"
[nodes.hello]
play = [ { static = "hello" } ]
next = "menu"
[nodes.menu]
play = [ { static = "menu" } ]
next = "hello"
"""

MENU_WITHOUT_TIMEOUT = """
start = "menu"
[nodes.menu]
play = [ { static = "hello" }, { static = "menu" } ]
dtmf = { "1" = "goodbye" }
[nodes.goodbye]
play = [ { static = "goodbye" } ]
hangup = true
"""

NORMAL_CALLS = 3
EARLY_HANGUPS = 20
"""Connections per delay that hang up right after their UUID."""
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class Live:
    """A running `serve` with its metrics URL: what the tests attack and then inspect."""

    def __init__(self, serve: ServeProcess, metrics_port: int) -> None:
        self.serve = serve
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.idle_tasks = 0

    @property
    def port(self) -> int:
        return self.serve.port

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await get(self.url)
        assert response.status_code == 200, response.text
        return scrape(response.text)

    async def value(self, name: str, **labels: str) -> float:
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))), 0.0)

    async def settle_idle(self) -> None:
        """After one warm-up call: the task count of an idle process (lazy clients have started by then)."""
        await normal_call(self.port, 1.0)
        await self.wait_idle(check_tasks=False)
        self.idle_tasks = int(await self.value("voicebridge_tasks"))

    async def wait_idle(self, timeout_s: float = 20, check_tasks: bool = True) -> None:
        """Nothing left behind: no call, no pending connection, tasks back to the idle count."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = await self.metrics()
            figures = (m[("voicebridge_active_calls", ())], m[("voicebridge_pending_connections", ())],
                       m[("voicebridge_tasks", ())])
            if figures[0] == 0 and figures[1] == 0 and (not check_tasks or figures[2] <= self.idle_tasks):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind after {timeout_s} s: active calls, pending connections, "
                                     f"tasks = {figures}; idle tasks {self.idle_tasks}")
            await asyncio.sleep(0.1)


async def normal_call(port: int, duration_s: float) -> CallReport:
    return await place_call("127.0.0.1", port, duration_s=duration_s, max_wait_s=duration_s + 20)


def assert_paced(reports: list[CallReport], duration_s: float) -> None:
    """The normal calls were served as a phone expects, whatever the abuse next to them did."""
    for report in reports:
        assert report.error is None and report.hangup == "caller", report
        assert report.frames >= duration_s / 0.02 * 0.8, report
        assert report.realtime_ratio is not None and 0.9 <= report.realtime_ratio <= 1.1, report
        assert report.worst_gap_ms is not None and report.worst_gap_ms < 500, report


async def while_normal_calls_play(port: int, abuse: Callable[[], Awaitable[None]],
                                  duration_s: float = 5.0) -> list[CallReport]:
    """Run `abuse()` once the normal calls are playing; their reports after they hung up."""
    calls = [asyncio.create_task(normal_call(port, duration_s)) for _ in range(NORMAL_CALLS)]
    await asyncio.sleep(0.5)
    await abuse()
    return list(await asyncio.gather(*calls))


@pytest.fixture
async def live(redis_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Live]]]:
    """`await live(dialogue_text, **env)` -> a started `serve` (json logs, metrics on) and its idle task count."""
    await load_fragments(redis_url)
    emulator = Emulator(api_key=DEFAULT_API_KEY)
    await emulator.start()
    started: list[ServeProcess] = []

    async def start(dialogue: str, **env: str) -> Live:
        path = tmp_path / f"dialogue{len(started)}.toml"
        path.write_text(dialogue)
        metrics_port = free_port()
        settings = {"REDIS_URL": redis_url, "ELEVENLABS_API_KEY": DEFAULT_API_KEY,
                    "ELEVENLABS_BASE_URL": emulator.url, "DIALOGUE_FILE": str(path),
                    "METRICS_PORT": str(metrics_port), "LOG_FORMAT": "json", "BRIDGE_PORT": "0",
                    "BRIDGE_SHUTDOWN_GRACE": "1"}
        settings.update(env)
        serve = ServeProcess(env=clean_env(**settings))
        await serve.__aenter__()
        started.append(serve)
        server = Live(serve, metrics_port)
        await server.settle_idle()
        return server

    try:
        yield start
        for serve in started:
            assert await serve.stop() == 0, serve.output[-3000:]
    finally:
        for serve in started:
            await serve.__aexit__(None, None, None)
        await emulator.stop()


# --- 1. early hang-ups -------------------------------------------------------------------------------------


async def hang_up_after_uuid(port: int, delay_s: float) -> str:
    """Connect, send a UUID, close `delay_s` later; the call's UUID."""
    call_uuid = uuid.uuid4()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_uuid(call_uuid))
    await writer.drain()
    if delay_s:
        await asyncio.sleep(delay_s)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return str(call_uuid)


def lines_after_call_ended(serve: ServeProcess, call_uuid: str) -> list[dict]:
    """Log lines of the call after its `call ended`/`call_ended` line (the dialogue must be over by then)."""
    lines = [line for line in serve.lines if line.get("call") == call_uuid]
    ended = [i for i, line in enumerate(lines) if line.get("event") in ("call_ended", "call_ended")]
    assert ended, f"no `call ended` line for {call_uuid}"
    return lines[ended[0] + 1:]


@pytest.mark.parametrize("dialogue", [LOOPING, MENU_WITHOUT_TIMEOUT], ids=["looping", "menu-without-timeout"])
async def test_early_hang_ups_leave_no_dialogue_running(live, dialogue):
    server = await live(dialogue)
    uuids: list[str] = []

    async def abuse() -> None:
        for delay_s in (0.0, 0.001, 0.005):
            uuids.extend(await asyncio.gather(*(hang_up_after_uuid(server.port, delay_s)
                                                 for _ in range(EARLY_HANGUPS))))

    reports = await while_normal_calls_play(server.port, abuse)
    assert_paced(reports, 5.0)
    await server.wait_idle()
    for call_uuid in uuids:
        after = lines_after_call_ended(server.serve, call_uuid)
        assert not [line for line in after if line.get("event") == "node"], (call_uuid, after)
    events = [line.get("event") for line in server.serve.lines]
    assert "dialogue_failed" not in events
    assert await server.value("voicebridge_errors_total", where="orchestrator") == 0


# --- 2. a DTMF flood ---------------------------------------------------------------------------------------


async def test_a_dtmf_flood_is_limited_and_hung_up_without_touching_other_calls(live):
    server = await live(MENU_WITHOUT_TIMEOUT)
    flood_uuid = uuid.uuid4()

    async def abuse() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_uuid(flood_uuid) + b"\x03\x00\x01\x35" * 100_000)  # "5", not in the menu
        with contextlib.suppress(OSError):  # hung up mid-flood: the rest is refused
            await writer.drain()
        try:
            while await asyncio.wait_for(reader.read(65536), 10):
                pass
        except (OSError, TimeoutError):
            pass
        writer.close()

    reports = await while_normal_calls_play(server.port, abuse)
    assert_paced(reports, 5.0)
    await server.wait_idle()
    mine = [line for line in server.serve.lines if line.get("call") == str(flood_uuid)]
    (ended,) = [line for line in mine if line.get("event") == "call_ended"]
    assert ended["by"] == "dtmf-flood"
    digits = [line for line in mine if line.get("event") in ("dtmf", "dtmf_ignored")]
    assert len(digits) <= 2 * (DTMF_BURST + 10), len(digits)  # no per-digit info lines past the limit
    assert [line["event"] for line in mine if line.get("level") == "warning"].count("dtmf_rate_limited") == 1
    assert await server.value("voicebridge_dtmf_dropped_total") >= DTMF_FLOOD_EXCESS
    (flood,) = [line for line in mine if line.get("event") == "dtmf_flood_hangup"]
    assert flood["dropped"] <= DTMF_FLOOD_EXCESS + DTMF_BURST  # recognised early, not after 100,000 digits


async def test_a_human_pace_of_digits_is_never_limited(live):
    server = await live(MENU_WITHOUT_TIMEOUT)
    report = await place_call("127.0.0.1", server.port, duration_s=4.0, max_wait_s=20,
                              dtmf=[(0.5 + 0.12 * i, "5") for i in range(12)])
    assert report.error is None and len(report.dtmf_sent) == 12
    await server.wait_idle()
    digits = [line for line in server.serve.lines if line.get("call") == report.uuid and line.get("event") == "dtmf"]
    assert len(digits) == 12
    assert await server.value("voicebridge_dtmf_dropped_total") == 0


def test_the_key_rate_limit_allows_a_burst_then_the_rate_then_calls_a_flood():
    limit = KeyRateLimit(rate_per_s=10, burst=5, flood_excess=20)
    now = 100.0
    assert [limit.offer(now) for _ in range(5)] == [KeyRateLimit.ACCEPT] * 5
    assert limit.offer(now) == KeyRateLimit.DROP
    assert limit.offer(now + 0.15) == KeyRateLimit.ACCEPT  # 0.15 s at 10/s: one more token
    verdicts = [limit.offer(now + 0.15) for _ in range(30)]
    assert KeyRateLimit.FLOOD in verdicts and verdicts.index(KeyRateLimit.FLOOD) < 20
    # a human at ten keys a second for a minute never loses one
    human = KeyRateLimit(rate_per_s=10, burst=5, flood_excess=20)
    assert {human.offer(1000 + i * 0.1) for i in range(600)} == {KeyRateLimit.ACCEPT}
    with pytest.raises(ValueError, match="rate_per_s"):
        KeyRateLimit(rate_per_s=0)


# --- 3. silent connections at the cap ----------------------------------------------------------------------


async def test_silent_connections_at_the_cap_never_crowd_out_calls(live):
    server = await live(LOOPING, BRIDGE_MAX_CALLS="10", BRIDGE_MAX_PENDING="8", BRIDGE_UUID_TIMEOUT="3")
    silent: list[socket.socket] = []
    late: list[CallReport] = []

    async def abuse() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(40):  # five times the pending bound, and more than the call cap
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            silent.append(sock)
        await asyncio.sleep(0.2)
        assert await server.value("voicebridge_pending_connections") <= 8
        # a real call arriving now still gets in (the oldest silent connection makes room)
        late.append(await normal_call(server.port, 1.0))

    reports = await while_normal_calls_play(server.port, abuse)
    assert_paced(reports + late, 1.0)
    assert_paced(reports, 5.0)
    assert await server.value("voicebridge_calls_rejected_total", reason="pending-limit") >= 32
    await server.wait_idle()  # the rest timed out (BRIDGE_UUID_TIMEOUT)
    assert await server.value("voicebridge_calls_rejected_total", reason="no-uuid") >= 1
    for sock in silent:
        sock.close()


# --- 4. garbage --------------------------------------------------------------------------------------------


async def test_garbage_closes_only_its_own_connection(live):
    server = await live(LOOPING)
    rng = random.Random(12)

    async def send(data: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        try:
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
        except (OSError, TimeoutError):
            pass
        writer.close()

    async def abuse() -> None:
        garbage = [rng.randbytes(rng.randrange(1, 8192)) for _ in range(30)]
        after_uuid = [encode_uuid(uuid.uuid4()) + rng.randbytes(rng.randrange(1, 8192)) for _ in range(30)]
        await asyncio.gather(*(send(data) for data in garbage + after_uuid))

    reports = await while_normal_calls_play(server.port, abuse)
    assert_paced(reports, 5.0)
    await server.wait_idle()
    assert await server.value("voicebridge_calls_rejected_total", reason="protocol-error") >= 1
    assert await server.value("voicebridge_gc_passes_total", generation="0") >= 1  # the collector is timed
    assert "dialogue_failed" not in [line.get("event") for line in server.serve.lines]


# --- 5. small defaults -------------------------------------------------------------------------------------


def test_the_metrics_port_stays_on_loopback_when_the_bridge_listens_everywhere():
    settings = Settings.load({"BRIDGE_HOST": "0.0.0.0"})
    assert settings.bridge.host == "0.0.0.0"
    assert settings.bridge.metrics_host == "127.0.0.1"
    assert Settings.load({"BRIDGE_HOST": "0.0.0.0", "METRICS_HOST": "0.0.0.0"}).bridge.metrics_host == "0.0.0.0"


def test_serve_help_warns_that_a_key_on_the_command_line_is_readable_by_others():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    assert "/proc/PID/cmdline" in " ".join(out.split())


# --- memory: the collector's schedule (the soak benchmark measures the effect) ------------------------------


def test_a_full_collection_is_due_after_enough_finished_calls_but_not_too_often():
    policy = FullCollectionPolicy(after_calls=3, min_interval_s=10)
    assert [policy.call_ended(100.0) for _ in range(3)] == [False, False, True]
    assert [policy.call_ended(101.0) for _ in range(3)] == [False, False, False]  # 1 s later: too soon
    assert policy.call_ended(111.0) is True  # the count went on; the interval has passed
    with pytest.raises(ValueError, match="after_calls"):
        FullCollectionPolicy(after_calls=0)


def test_a_full_collection_waits_for_a_quiet_bridge_unless_too_many_calls_have_ended():
    # its pause is heard by every live call: due only with few calls up, or after very many finished calls
    policy = FullCollectionPolicy(after_calls=3, min_interval_s=10, quiet_calls=5, force_after_calls=8)
    assert [policy.call_ended(100.0, live_calls=800) for _ in range(3)] == [False, False, False]
    assert policy.call_ended(101.0, live_calls=6) is False  # still busy
    assert policy.call_ended(102.0, live_calls=5) is True  # quiet: the 5 calls left hear a short pause
    assert [policy.call_ended(120.0 + i, live_calls=800) for i in range(8)] == [False] * 7 + [True]  # forced
    assert policy.call_ended(200.0, live_calls=0) is False  # the count started over
    with pytest.raises(ValueError, match="force_after_calls"):
        FullCollectionPolicy(after_calls=10, force_after_calls=5)


def test_gc_pauses_are_kept_per_window_and_for_the_process_lifetime():
    now = [0.0]
    pauses = GcPauses(clock=lambda: now[0])
    pauses._on_gc("start", {"generation": 2})
    now[0] = 0.012
    pauses._on_gc("stop", {"generation": 2})
    pauses.record(0, 0.001)
    summary = pauses.summary()
    assert summary["gen2_passes"] == 1 and summary["gen2_max_ms"] == 12.0 and summary["gen0_max_ms"] == 1.0
    pauses.reset()
    assert pauses.summary()["gen2_passes"] == 0
    assert pauses.lifetime_passes == [1, 0, 1] and pauses.lifetime_max_s[2] == pytest.approx(0.012)
