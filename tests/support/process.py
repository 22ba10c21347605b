"""The project's processes as a test meets them: `python -m bridge serve` (the one wrapper every test uses),
a clean environment for any subprocess, the sample fragments loaded into a Redis, small HTTP and port probes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from voice.cache import RedisCacheManager
from voice.config import CacheConfig
from voice.load_static_audio import load_paths

ROOT = Path(__file__).resolve().parents[2]
FRAGMENTS = ROOT / "bridge" / "data" / "fragments"
SETTINGS_PREFIXES = ("BRIDGE_", "REDIS_", "ELEVENLABS_", "TTS_", "LLM_", "STT_", "DIALOGUE_", "LOG_", "METRICS_",
                     "FILLER", "BARGE_IN_", "EMULATOR_")

LogLine = dict[str, Any]


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any of the bridge's settings, plus `settings`: a developer's own
    variables (or a `.env`-style export) must not change what a subprocess under test does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    env.update(settings)
    return env


async def load_fragments(redis_url: str) -> None:
    """The sample fragments into Redis, with the project's own loader."""
    await RedisCacheManager.reset_instance()
    try:
        out = io.StringIO()
        status = await load_paths([str(FRAGMENTS)], CacheConfig(redis_url=redis_url), out=out)
        assert status == 0, out.getvalue()
    finally:
        await RedisCacheManager.reset_instance()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


async def get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url, **kw)


async def run_serve(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> tuple[int, str]:
    """`python -m bridge serve ARGS` run to its exit (for the refusals): its exit status and its stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", *args, env=clean_env() if env is None else env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


class ServeProcess:
    """`python -m bridge serve ARGS` as a real process, its JSON log lines (stderr) and stdout collected.

    `env` defaults to a clean environment with `BRIDGE_PORT=0` and JSON logs. Entering waits for the first
    `listening` line (the port is in `.port`) unless `wait_listening=False` (a supervisor's workers each log
    their own). Leaving kills whatever is still running; `stop()` is the graceful SIGTERM path.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, wait_listening: bool = True) -> None:
        self.args = args
        self.env = clean_env(BRIDGE_PORT="0", LOG_FORMAT="json") if env is None else env
        self.wait_listening = wait_listening
        self.lines: list[LogLine] = []
        self.raw: list[bytes] = []
        self._proc: asyncio.subprocess.Process | None = None
        self.readers: list[asyncio.Task[None]] = []
        self.port = 0

    @property
    def proc(self) -> asyncio.subprocess.Process:
        assert self._proc is not None, "the process has not been started"
        return self._proc

    async def __aenter__(self) -> ServeProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", *self.args, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._proc.stderr is not None and self._proc.stdout is not None
        self.readers = [asyncio.create_task(self._read(self._proc.stderr)),
                        asyncio.create_task(self._read(self._proc.stdout))]
        if self.wait_listening:
            self.port = (await self.wait_for("listening", 30))["port"]
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.raw.append(raw)
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "non-json", "text": raw.decode(errors="replace")})

    def events(self, event: str, **fields: object) -> list[LogLine]:
        """The log lines of `event` so far whose `fields` have the given values."""
        return [line for line in self.lines
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())]

    def _exited(self) -> bool:
        return self.proc.returncode is not None and all(reader.done() for reader in self.readers)

    async def wait_for_all(self, event: str, count: int = 1, timeout_s: float = 20,
                           **fields: object) -> list[LogLine]:
        """Wait until `count` lines of `event` (with `fields`) were logged; all of them. Fails at once when
        the process exited without them."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.events(event, **fields)) < count:
            if time.monotonic() > deadline or self._exited():
                raise AssertionError(f"{len(found)} of {count} {event!r} lines; got "
                                     f"{[line.get('event') for line in self.lines][-30:]}")
            await asyncio.sleep(0.02)
        return found

    async def wait_for(self, event: str, timeout_s: float = 10, **fields: object) -> LogLine:
        """The first line of `event` with `fields`, once logged."""
        return (await self.wait_for_all(event, 1, timeout_s, **fields))[0]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, then the exit status once every output line has been read."""
        if self.proc.returncode is None:
            self.proc.terminate()
        return await self.exited(timeout_s)

    async def exited(self, timeout_s: float = 20) -> int:
        """The exit status of a process that is on its way out (no signal sent), once every line is read."""
        status = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await asyncio.wait_for(asyncio.gather(*self.readers), timeout_s)
        return status

    @property
    def output(self) -> str:
        return b"".join(self.raw).decode(errors="replace")

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            # bounded: a lost exit status must not hide the test's own failure behind a timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 10)
        for reader in self.readers:
            reader.cancel()
