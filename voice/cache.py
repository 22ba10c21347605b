"""`RedisCacheManager`: the voice cache on Redis (spec: cache.ru.md), a process-wide Singleton.

Why it is built the way it is:

* **Degrade, don't fail.** Every method that talks to Redis catches the errors redis-py raises (and the
  bare `TimeoutError`/`OSError` a socket can leak), logs the operation, the key and the error, and returns
  the empty value (None / False). Only the caller's own mistakes raise: an empty chunk list, a bad TTL, an
  unreadable WAV file.
* **A hung Redis never stalls a call's audio.** Connect and socket timeouts are short (250 ms by default)
  and every operation also runs under one overall deadline (connect + 2 x socket timeout), which covers
  waiting for a free connection as well.
* **Circuit breaker.** After a failure Redis is not tried for `REDIS_BREAKER_COOLOFF` seconds: calls return
  the empty value at once instead of each paying a timeout. When the cool-off is over, one call probes
  Redis while the others keep skipping; its success closes the breaker. A failure also throws the
  connections away, so a restarted Redis is used again without any reconnect call.
* **Singleton.** `RedisCacheManager()` returns the one instance of the process (built from the environment
  on first use, or from the `CacheConfig` given then). Asking for it with a *different* configuration is
  an error; `await RedisCacheManager.reset_instance()` closes and forgets it, and the next construction
  builds a fresh one (tests, a second configuration). The connections belong to the event loop that
  opened them; used from another loop, the instance opens new ones (close it on the old loop first to
  release the old connections cleanly).
* **Cluster.** `REDIS_URL=redis+cluster://host:port[,host:port...]` (or `rediss+cluster://`) selects
  redis-py's asyncio `RedisCluster`, seeded with those nodes. Every write touches one key, so the MULTI
  pipeline lives in one hash slot and stays atomic there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, DataError, RedisClusterException, RedisError, ResponseError

from voice.audio import Loudness, WavAudio, active_level_dbfs, frame_bytes_for, normalize, read_audio, to_frames
from voice.config import CacheConfig, ConfigError, load, safe_url
from voice.domain.interfaces.cache import AbstractCache, LoadedAudio
from voice.keys import is_tts_key

log = structlog.get_logger(__name__)

T = TypeVar("T")

# What a Redis call can raise when Redis (or the way to it) is in trouble. redis-py wraps socket timeouts
# in redis.TimeoutError, but the overall deadline raises the builtin TimeoutError (an OSError), and the
# cluster client raises RedisClusterException, which is not a RedisError.
_FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


def _is_command_error(exc: BaseException) -> bool:
    """Redis answered, but refused this command (e.g. WRONGTYPE): the server is fine, keep using it."""
    return isinstance(exc, (ResponseError, DataError)) and not isinstance(exc, ClusterError)


@dataclass(frozen=True)
class FileChunks:
    """A file read for the cache: what it was, its chunks, and the level it was brought to."""

    audio: WavAudio
    chunks: list[bytes]
    level_dbfs: float | None
    gain_db: float


def read_audio_chunks(wav_filepath: str, chunk_size_ms: int = 20, target_dbfs: float | None = None) -> FileChunks:
    """Read and convert an audio file, level it to `target_dbfs` (None: as recorded) and cut it in chunks
    (the last padded). Blocking: run it in a thread."""
    frame_bytes = frame_bytes_for(chunk_size_ms)  # a bad chunk size fails before the file is read
    audio = read_audio(wav_filepath)
    pcm, level, gain = audio.pcm, active_level_dbfs(audio.pcm), 0.0
    if target_dbfs is not None:
        levelled = normalize(pcm, Loudness(target_dbfs))
        pcm, level, gain = levelled.pcm, levelled.level_dbfs, levelled.gain_db
    return FileChunks(audio, to_frames(pcm, frame_bytes), level, gain)


def _cluster_spec(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """`redis+cluster://[user:pass@]h1:p1[,h2:p2...][?opts]` -> seed nodes and client keyword arguments."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("REDIS_URL", f"bad cluster node {item.strip()!r} in {safe_url(url)!r}; use host:port")
        seeds.append((host, int(port)))
    first_host, first_port = seeds[0]
    netloc = (userinfo + "@" if userinfo else "") + (f"[{first_host}]" if ":" in first_host else first_host)
    plain = urlunsplit((parts.scheme.removesuffix("+cluster"), f"{netloc}:{first_port}", parts.path, parts.query, ""))
    try:
        kwargs: dict[str, Any] = dict(parse_url(plain))
    except ValueError as exc:
        raise ConfigError("REDIS_URL", str(exc)) from None
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is SSLConnection:
        kwargs["ssl"] = True
    if kwargs.pop("db", 0) not in (0, None):
        raise ConfigError("REDIS_URL", "a Redis Cluster has only database 0; remove the /<db> from the URL")
    return seeds, kwargs


class RedisCacheManager(AbstractCache):
    """The Redis-backed voice cache. See the module docstring for the Singleton rules."""

    _instance: ClassVar[RedisCacheManager | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    config: CacheConfig

    def __new__(cls, config: CacheConfig | None = None) -> RedisCacheManager:
        with RedisCacheManager._instance_lock:
            current = RedisCacheManager._instance
            if current is not None:
                if config is not None and config != current.config:
                    raise RuntimeError(
                        "RedisCacheManager already exists with another configuration "
                        f"({safe_url(current.config.redis_url)}); "
                        "await RedisCacheManager.reset_instance() before building a new one"
                    )
                return current
            self = super().__new__(cls)
            self._setup(config if config is not None else load(CacheConfig))
            RedisCacheManager._instance = self
            return self

    @classmethod
    async def reset_instance(cls) -> None:
        """Close the process's instance (if any) and forget it: the next `RedisCacheManager(...)` is new."""
        with RedisCacheManager._instance_lock:
            current, RedisCacheManager._instance = RedisCacheManager._instance, None
        if current is not None:
            await current.close()

    def _setup(self, config: CacheConfig) -> None:
        self.config = config
        self._cluster = _cluster_spec(config.redis_url) if config.is_cluster else None  # validates the URL
        self._deadline_s = config.redis_connect_timeout_s + 2 * config.redis_socket_timeout_s
        self._client: Redis | RedisCluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the client's connections belong to
        self._limiter: asyncio.Semaphore | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._open_until = 0.0  # monotonic time the breaker closes; 0.0 = closed
        self._probing = False
        self.failures = 0  # Redis failures seen (each one logged)
        self.skipped = 0  # calls answered empty without touching Redis (breaker open)

    # --- connection ---------------------------------------------------------------------------------

    def _build_client(self) -> Redis | RedisCluster:
        c = self.config
        common: dict[str, Any] = dict(
            socket_timeout=c.redis_socket_timeout_s,
            socket_connect_timeout=c.redis_connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # fail fast: the breaker decides when to try again
            decode_responses=False,  # audio is binary
        )
        if self._cluster is not None:
            seeds, kwargs = self._cluster
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in seeds],
                max_connections=c.max_connections,
                **common,
                **kwargs,
            )
        pool = ConnectionPool.from_url(c.redis_url, max_connections=c.max_connections, **common)
        return Redis.from_pool(pool)

    def _current_client(self) -> Redis | RedisCluster:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            # Used from a new event loop (the old one is gone, e.g. a second asyncio.run): the old
            # connections cannot be used or even closed from here, so they are left to the collector.
            log.debug("cache_new_event_loop")
            self._client = None
        if self._client is None:
            self._loop = loop
            self._client = self._build_client()
            # At most max_connections commands in flight: neither client waits for a free connection
            # by itself (the cluster client raises at once), so callers queue here, under the deadline.
            self._limiter = asyncio.Semaphore(self.config.max_connections)
        return self._client

    async def connect(self) -> None:
        """Open the pool and check Redis with a PING. Redis down: logged, and later calls retry by themselves."""
        if await self.ping():
            log.info("cache_connected", url=safe_url(self.config.redis_url), cluster=self.config.is_cluster)
        else:
            log.warning("cache_unavailable", url=safe_url(self.config.redis_url),
                        hint="calls go on without the cache; Redis is retried after the cool-off")

    async def close(self) -> None:
        """Close the connections and wait for background clean-ups. The instance stays usable (it reconnects)."""
        loop = asyncio.get_running_loop()
        client, self._client, self._limiter = self._client, None, None
        if client is not None and self._loop is loop:
            await self._dispose(client)
        pending = [task for task in self._background if task.get_loop() is loop]
        self._background.clear()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _dispose(self, client: Redis | RedisCluster) -> None:
        try:
            async with asyncio.timeout(self._deadline_s):
                await client.aclose()
        except Exception as exc:  # closing a broken client must never raise
            log.debug("cache_close_failed", error=f"{type(exc).__name__}: {exc}")

    async def ping(self) -> bool:
        """True when Redis answers (readiness checks). Honours the breaker like every other call."""
        return bool(await self._run("ping", "", lambda client: client.ping(), False))

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed recently and is being skipped)."""
        return not self._open_until

    # --- the breaker and the one wrapper every Redis call goes through -----------------------------

    def _admit(self) -> str:
        """"go" (breaker closed), "probe" (cool-off over: this call tries Redis for everyone) or "skip"."""
        if not self._open_until:
            return "go"
        if self._probing or time.monotonic() < self._open_until:
            return "skip"
        self._probing = True  # the others keep skipping until this probe settles
        return "probe"

    async def _run(self, op: str, key: str, action: Callable[[Any], Awaitable[T]], empty: T) -> T:
        admitted = self._admit()
        if admitted == "skip":
            self.skipped += 1
            return empty
        client = None
        try:
            async with asyncio.timeout(self._deadline_s):
                client = self._current_client()
                limiter = self._limiter
                assert limiter is not None
                async with limiter:
                    result = await action(client)
        except _FAILURES as exc:
            if _is_command_error(exc):
                self._succeeded()
                log.warning("cache_command_failed", operation=op, key=key, error=f"{type(exc).__name__}: {exc}")
            else:
                self._failed(op, key, exc, client)
            return empty
        except BaseException:  # cancelled (the call hung up): not Redis's fault; let another call probe
            if admitted == "probe":
                self._probing = False
            raise
        self._succeeded()
        return result

    def _succeeded(self) -> None:
        if self._open_until:
            log.info("cache_recovered", skipped=self.skipped)
            self._open_until = 0.0
        self._probing = False

    def _failed(self, op: str, key: str, exc: BaseException, client: Redis | RedisCluster | None) -> None:
        self.failures += 1
        self._probing = False
        cooloff = self.config.breaker_cooloff_s
        if cooloff > 0:
            self._open_until = time.monotonic() + cooloff
        log.warning("cache_redis_failed", operation=op, key=key, error=f"{type(exc).__name__}: {exc}",
                    skip_redis_s=cooloff)
        if client is not None and client is self._client:
            # Throw the connections away (they may be dead or half-read); the next call builds new ones.
            self._client, self._limiter = None, None
            task = asyncio.get_running_loop().create_task(self._dispose(client))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # --- the specified methods ----------------------------------------------------------------------

    async def load_and_set_audio(self, key: str, wav_filepath: str, chunk_size_ms: int = 20) -> LoadedAudio:
        """See `AbstractCache.load_and_set_audio`; the key's kind decides the expiry (static: none).

        Any file `voice.audio.read_audio` reads (WAV of any kind, FLAC, OGG/Vorbis, ...); with
        `AUDIO_NORMALIZE` (the default) it is stored at `AUDIO_TARGET_DBFS`."""
        _check_key(key)
        read = await asyncio.to_thread(read_audio_chunks, wav_filepath, chunk_size_ms, self.config.loudness_target)
        stored = await self.set_audio_chunks(key, read.chunks)
        return LoadedAudio(key=key, path=str(wav_filepath), chunks=len(read.chunks), duration_s=read.audio.duration_s,
                           source_format=read.audio.source_format, stored=stored, level_dbfs=read.level_dbfs,
                           gain_db=read.gain_db)

    async def set_audio_chunks(
        self, key: str, audio_chunks: Sequence[bytes], *, ttl_seconds: int | None = None
    ) -> bool:
        """Atomically replace the list under `key` (MULTI: DEL, RPUSH all, EXPIRE when there is a TTL).

        `ttl_seconds=None`: `tts:` keys get `TTS_CACHE_TTL`, other keys no expiry; a positive int: that TTL.
        """
        _check_key(key)
        chunks = _check_chunks(key, audio_chunks)
        ttl = self._ttl_for(key, ttl_seconds)

        async def write(client: Any) -> bool:
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.rpush(key, *chunks)
                if ttl is not None:
                    pipe.expire(key, ttl)
                await pipe.execute()
            return True

        return await self._run("set_audio_chunks", key, write, False)

    async def get_audio_chunks(self, key: str) -> list[bytes] | None:
        """The whole list in one round trip (LRANGE 0 -1), as bytes; None when missing or on error."""
        _check_key(key)
        chunks = await self._run("get_audio_chunks", key, lambda client: client.lrange(key, 0, -1), None)
        return chunks or None

    async def set_text(self, key: str, text: str, ttl_seconds: int) -> bool:
        """Store UTF-8 text with a mandatory, positive TTL (SET key text EX ttl)."""
        _check_key(key)
        if not isinstance(text, str):
            raise TypeError(f"set_text({key!r}): text must be a string, got {type(text).__name__}")
        ttl = _check_ttl(key, ttl_seconds)
        data = text.encode("utf-8")
        return bool(await self._run("set_text", key, lambda client: client.set(key, data, ex=ttl), False))

    async def get_text(self, key: str) -> str | None:
        """The text under `key`; None when missing, on error, or when the value is not UTF-8 (logged)."""
        _check_key(key)
        raw: bytes | None = await self._run("get_text", key, lambda client: client.get(key), None)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.warning("cache_text_not_utf8", operation="get_text", key=key, error=str(exc))
            return None

    def _ttl_for(self, key: str, ttl_seconds: int | None) -> int | None:
        if ttl_seconds is not None:
            return _check_ttl(key, ttl_seconds)
        return self.config.tts_ttl_s if is_tts_key(key) else None


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"cache key must be a non-empty string, got {key!r}")


def _check_ttl(key: str, ttl_seconds: object) -> int:
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise ValueError(f"{key!r}: ttl_seconds must be a positive whole number of seconds, got {ttl_seconds!r}")
    return ttl_seconds


def _check_chunks(key: str, audio_chunks: Sequence[bytes]) -> list[bytes]:
    if isinstance(audio_chunks, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            f"{key!r}: audio_chunks must be a list of byte chunks, not a single {type(audio_chunks).__name__}"
        )
    chunks = list(audio_chunks)
    if not chunks:
        raise ValueError(f"{key!r}: no audio chunks; an empty list cannot be cached")
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"{key!r}: chunk {index} is {type(chunk).__name__}, not bytes")
        if not len(chunk):
            raise ValueError(f"{key!r}: chunk {index} is empty")
    return chunks
