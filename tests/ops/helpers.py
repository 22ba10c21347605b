"""Helpers for the operator tests: `voice-bridge serve` as a real process, its log lines, its HTTP endpoint."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

import httpx

from voice.cache import RedisCacheManager
from voice.config import CacheConfig
from voice.load_static_audio import load_paths

ROOT = Path(__file__).resolve().parents[2]
FRAGMENTS = ROOT / "bridge" / "data" / "fragments"
SETTINGS_PREFIXES = ("BRIDGE_", "REDIS_", "ELEVENLABS_", "TTS_", "LLM_", "DIALOGUE_", "LOG_", "METRICS_",
                     "FILLER", "BARGE_IN_", "EMULATOR_")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any of the bridge's settings, plus `settings`."""
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


class ServeProcess:
    """`python -m bridge serve` with the given environment; its stderr (JSON log lines) and stdout kept."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.args = args
        self.lines: list[dict] = []
        self.raw: list[bytes] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def __aenter__(self) -> ServeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", *self.args, env=self.env,
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.readers = [asyncio.create_task(self._read(self.proc.stderr)),
                        asyncio.create_task(self._read(self.proc.stdout))]
        line = await self.wait_for("listening", 30)
        self.port = line["port"]
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.raw.append(raw)
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "non-json", "text": raw.decode(errors="replace")})

    async def wait_for(self, event: str, timeout_s: float = 10, **fields: object) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            if self.proc.returncode is not None and all(r.done() for r in self.readers):
                break
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {event!r} log line; got {[line.get('event') for line in self.lines]}")

    async def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, then the exit status once every output line has been read."""
        if self.proc.returncode is None:
            self.proc.terminate()
        status = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await asyncio.wait_for(asyncio.gather(*self.readers), timeout_s)
        return status

    @property
    def output(self) -> str:
        return b"".join(self.raw).decode(errors="replace")

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for reader in self.readers:
            reader.cancel()


async def get(url: str, **kw) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url, **kw)
