"""Start-up failures name the setting and its value: a taken or privileged port, a host that does not resolve.

`serve` binds every port before it reports ready, so a failure leaves no half-started bridge: one line on
stderr, exit status 2, and no `listening` line. Real sockets throughout: ports taken by the test, hosts
that do not resolve, `python -m bridge serve` as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.app import serve
from bridge.config import BridgeConfig, Settings
from bridge.ops.listen import ListenError, listen_sockets, metrics_address
from bridge.server import AudioSocketServer
from support.process import clean_env, get, port_open


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on (without SO_REUSEPORT, as most programs do)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_serve(*args: str, prefix: tuple[str, ...] = (), **env: str) -> tuple[int, list[str], list[dict]]:
    """`python -m bridge serve ARGS` to its end: (exit status, stderr's plain lines, its JSON log lines)."""
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "bridge", "serve", "--silence", *args,
        env=clean_env(LOG_FORMAT="json", **env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    plain, logged = [], []
    for line in err.decode().splitlines():
        if line.startswith("{"):
            logged.append(json.loads(line))
        else:
            plain.append(line)
    assert proc.returncode is not None
    return proc.returncode, plain, logged


def assert_refused(status: int, plain: list[str], logged: list[dict], expected: str) -> None:
    """Exit status 2, one line naming the settings, and the bridge never reported itself listening."""
    assert status == 2, (plain, logged)
    assert len(plain) == 1 and plain[0].startswith(f"voice-bridge serve: cannot listen on {expected}"), plain
    events = [line["event"] for line in logged]
    assert "listening" not in events and "metrics_listening" not in events, events
    assert events[-1] == "cannot_listen", events


async def test_a_taken_bridge_port_names_bridge_port():
    with taken_port() as port:
        status, plain, logged = await run_serve(BRIDGE_PORT=str(port))
    assert_refused(status, plain, logged, f"BRIDGE_HOST=127.0.0.1 BRIDGE_PORT={port}: port {port} is in use")
    assert logged[-1]["BRIDGE_PORT"] == port and "reason" in logged[-1]


async def test_a_host_that_does_not_resolve_names_bridge_host():
    status, plain, logged = await run_serve(BRIDGE_HOST="999.1.1.1", BRIDGE_PORT="9092")
    assert_refused(status, plain, logged, "BRIDGE_HOST=999.1.1.1 BRIDGE_PORT=9092: not an IP address")


async def test_a_metrics_host_that_does_not_resolve_names_metrics_host():
    status, plain, logged = await run_serve(BRIDGE_PORT="0", METRICS_PORT=str(free_port()),
                                            METRICS_HOST="no-such-host.invalid")
    assert_refused(status, plain, logged, "METRICS_HOST=no-such-host.invalid METRICS_PORT=")


async def test_a_taken_metrics_port_is_found_before_the_audiosocket_port_opens():
    bridge_port = free_port()
    with taken_port() as port:
        status, plain, logged = await run_serve(BRIDGE_PORT=str(bridge_port), METRICS_PORT=str(port))
    assert_refused(status, plain, logged, f"METRICS_HOST=127.0.0.1 METRICS_PORT={port}: port {port} is in use")
    assert not port_open(bridge_port)


async def test_a_privileged_bridge_port_says_why():
    privileged_start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if privileged_start <= 1:
        pytest.skip("this kernel lets every user bind every port")
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root binds any port: run serve without the capability that allows it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and setpriv (util-linux) is not installed to drop CAP_NET_BIND_SERVICE")
        prefix = (setpriv, "--bounding-set", "-net_bind_service")
    status, plain, logged = await run_serve(prefix=prefix, BRIDGE_PORT="1")
    assert_refused(status, plain, logged, "BRIDGE_HOST=127.0.0.1 BRIDGE_PORT=1: port 1 is privileged")


async def test_workers_report_a_taken_metrics_port_by_its_setting():
    """Worker 1 serves metrics on METRICS_PORT + 1: the supervisor binds it before any worker starts."""
    with socket.socket() as holder:
        for _ in range(50):  # a port whose successor is free too: METRICS_PORT free, METRICS_PORT + 1 taken
            base = free_port()
            with contextlib.suppress(OSError):
                holder.bind(("127.0.0.1", base + 1))
                break
        holder.listen()
        status, plain, logged = await run_serve("--workers", "2", BRIDGE_PORT="0", METRICS_PORT=str(base))
    assert_refused(status, plain, logged,
                   f"METRICS_HOST=127.0.0.1 METRICS_PORT={base}+1: port {base + 1} is in use")
    assert "workers_started" not in [line["event"] for line in logged]


async def test_workers_report_a_taken_bridge_port_by_its_setting():
    with taken_port() as port:
        status, plain, logged = await run_serve("--workers", "2", BRIDGE_PORT=str(port))
    assert_refused(status, plain, logged, f"BRIDGE_HOST=127.0.0.1 BRIDGE_PORT={port}: port {port} is in use")


def test_the_metrics_address_names_the_host_setting_that_chose_it():
    defaulted = BridgeConfig(metrics_port=9100)  # METRICS_HOST defaults to loopback, whatever BRIDGE_HOST is
    assert metrics_address(defaulted) == [("METRICS_HOST", "127.0.0.1"), ("METRICS_PORT", 9100)]
    following = BridgeConfig(metrics_port=9100, metrics_host="", host="127.0.0.2")  # empty: BRIDGE_HOST's
    assert metrics_address(following) == [("BRIDGE_HOST", "127.0.0.2"), ("METRICS_PORT", 9100)]
    own = BridgeConfig(metrics_port=9100, metrics_host="0.0.0.0")
    assert metrics_address(own, worker=2) == [("METRICS_HOST", "0.0.0.0"), ("METRICS_PORT", "9100+2")]
    with taken_port() as port, pytest.raises(ListenError) as caught:
        listen_sockets("127.0.0.1", port, metrics_address(BridgeConfig(metrics_port=port)))
    assert str(caught.value).startswith(f"cannot listen on METRICS_HOST=127.0.0.1 METRICS_PORT={port}: port {port}")


@pytest.fixture
def gc_restored() -> Iterator[None]:
    """`serve` tunes the garbage collector for the process: put it back for the tests that follow."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_serve_is_ready_only_with_every_port_answering(gc_restored):
    """In process: when `ready` runs, /readyz answers 200; a taken metrics port raises before anything opens."""
    from bridge.server import silence_handler

    metrics_port = free_port()
    settings = Settings(bridge=BridgeConfig(port=0, metrics_port=metrics_port, grace_s=0))
    seen: dict[str, int] = {}
    probes: list[asyncio.Future[None]] = []

    async def probe() -> None:
        try:
            seen["readyz"] = (await get(f"http://127.0.0.1:{metrics_port}/readyz")).status_code
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # serve stops on SIGTERM, as in production

    def ready(server: AudioSocketServer) -> None:
        seen["port"] = server.port
        probes.append(asyncio.ensure_future(probe()))

    assert await serve(settings, silence_handler, ready=ready) == 0
    await probes[0]
    assert seen["readyz"] == 200
    assert not port_open(seen["port"]) and not port_open(metrics_port)  # both closed after the stop

    with taken_port() as taken:
        taken_settings = Settings(bridge=BridgeConfig(port=0, metrics_port=taken))
        with pytest.raises(ListenError) as caught:
            await serve(taken_settings, silence_handler, ready=lambda server: pytest.fail("reported ready"))
    assert caught.value.where[-1] == ("METRICS_PORT", taken)
