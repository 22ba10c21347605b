"""One `httpx.AsyncClient` for the whole process, so every call reuses warm keep-alive connections.

A new TLS handshake to ElevenLabs costs 100-300 ms; one pooled client per process pays it once per pooled
connection instead of once per call. An httpx client belongs to the event loop it first ran on, so the
shared client is kept per running loop (a weak mapping: a loop that is gone takes its entry with it). A
program has one loop and so one client; a test suite with a loop per test gets a fresh client per test and
should close it with `aclose_shared_client()` before its loop ends (the application does so on shutdown).
Timeouts are per request (each call's `TTSConfig`), so one client serves any configuration.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()

# Enough idle connections for a busy bridge; no upper bound on open ones (calls are the natural limit,
# and a bounded pool would only move the queueing from ElevenLabs' 429 to a local pool timeout).
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=60.0)
HEADERS = {"Accept-Encoding": "identity", "User-Agent": "voice-bridge"}


def shared_http_client() -> httpx.AsyncClient:
    """The process's client for the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(limits=LIMITS, headers=HEADERS, follow_redirects=False)
        _clients[loop] = client
    return client


async def aclose_shared_client() -> None:
    """Close the running loop's shared client (application shutdown, test teardown). Safe to call twice."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
