"""Opening the bridge's listening sockets, with failures that name the settings which chose the address.

A bind that fails says `[Errno 98] address already in use` or `Name or service not known`: it names neither
the setting to change nor, sometimes, the port. `ListenError` carries the settings (`BRIDGE_HOST=999.1.1.1
BRIDGE_PORT=9092`) and a plain reason, so `serve` can print one line and exit with status 2 (like any other
configuration error: restarting would fail the same way).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from bridge.config import BridgeConfig
from voice.config import env_name

__all__ = ["ListenError", "Where", "bridge_address", "explain", "listen_sockets", "metrics_address"]

Where = Sequence[tuple[str, object]]
"""The settings that chose an address, as (variable, value) pairs in the order an operator reads them."""


class ListenError(Exception):
    """A listening socket could not be opened. `str()` is the one line `serve` prints."""

    def __init__(self, where: Where, port: int, cause: OSError) -> None:
        self.where = tuple(where)
        self.cause = cause
        self.reason = explain(cause, port)
        settings = " ".join(f"{name}={value}" for name, value in self.where)
        super().__init__(f"cannot listen on {settings}: {self.reason}")

    def log_fields(self) -> dict[str, object]:
        """The failure as structured log fields: each setting by its name, the reason, the OS error."""
        return {**{name: value for name, value in self.where}, "reason": self.reason, "error": str(self.cause)}


def explain(exc: OSError, port: int) -> str:
    """What an OS error from resolving, binding or listening means for an operator."""
    if isinstance(exc, socket.gaierror):
        return f"not an IP address, and no host of that name resolves ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use by another program (`ss -ltnp 'sport = :{port}'` shows which)"
    if exc.errno == errno.EACCES:
        return (f"port {port} is privileged: ports below 1024 need root or the CAP_NET_BIND_SERVICE "
                "capability; choose a port of 1024 or above")
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no network interface of this machine has that address"
    return exc.strerror or str(exc)


def _named(field: str) -> str:
    return env_name(field, BridgeConfig.model_fields[field])


def bridge_address(config: BridgeConfig) -> list[tuple[str, object]]:
    """BRIDGE_HOST and BRIDGE_PORT with their values."""
    return [(_named("host"), config.host), (_named("port"), config.port)]


def metrics_address(config: BridgeConfig, worker: int = 0) -> list[tuple[str, object]]:
    """The settings behind the metrics address: METRICS_HOST (or BRIDGE_HOST, which it defaults to) and
    METRICS_PORT; worker `i` of `serve --workers N` listens on METRICS_PORT + i, shown as `9100+1`."""
    host = ("metrics_host" if config.metrics_host else "host")
    port: object = f"{config.metrics_port}+{worker}" if worker else config.metrics_port
    return [(_named(host), getattr(config, host)), (_named("metrics_port"), port)]


def listen_sockets(host: str, port: int, where: Where, *, backlog: int = 128) -> list[socket.socket]:
    """Listening TCP sockets on every address `host` resolves to (as asyncio's create_server binds them).

    Raises ListenError naming `where` when the host does not resolve or an address cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(where, port, exc) from None
    sockets: list[socket.socket] = []
    seen: set[object] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(where, port, exc) from None
    return sockets
