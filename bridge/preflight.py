"""Preflight: find, before the first call, what would otherwise show up only during calls.

A bridge with a refused ElevenLabs key, a fragment the dialogue names but Redis lacks, or an LLM endpoint that
is down still starts and answers calls: it degrades (live TTS, the fallback phrase, silence) and says so only
in the logs of a live call. The checks here ask each outside service the cheapest question that proves the
calls will work, with the bridge's own settings, and say what to do when one would not:

| check      | asks                                                          | fails when                        |
|------------|---------------------------------------------------------------|-----------------------------------|
| redis      | connect to `REDIS_URL`, select its database, write, read and  | unreachable, bad database, no     |
|            | delete a scratch key with a short TTL                         | password, read-only, mismatch     |
| tts-key    | `GET {ELEVENLABS_BASE_URL}/v1/user` with the key              | key unset or refused, unreachable |
| tts-voice  | `GET /v1/voices/{ELEVENLABS_VOICE_ID}`                        | (warning only)                    |
| tts-model  | `GET /v1/models`: is `ELEVENLABS_MODEL_ID` listed              | (warning only)                    |
| fragments  | every fragment the dialogue can play (its `static` items, the | one is missing from Redis         |
|            | `FILLERS`, the fallback), looked up in the cache              |                                   |
| llm        | `GET {LLM_BASE_URL}/models` (or a tiny completion); only when | unreachable, key refused          |
|            | the dialogue has `llm` items                                  |                                   |
| stt        | `GET {STT_OPENAI_BASE_URL}/models`; only for `STT_PROVIDER=openai` (the ElevenLabs recognizer    |
|            | uses the TTS key and base URL, which tts-key checks)                                             |

Each check is a small object behind one interface (`Check`); they run concurrently, each under a timeout, and
a check never raises: whatever goes wrong becomes its `CheckResult`. `voice-bridge check` prints the results
(`bridge.check_cmd`); `serve` runs the same checks at start and logs each failure (`log_preflight`), then
starts anyway: degrade, don't fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.config import Settings
from bridge.dialogue import Dialogue
from bridge.speaker import FALLBACK_FRAGMENT
from voice.cache import RedisCacheManager, _cluster_spec
from voice.config import CacheConfig, ConfigError, LLMConfig, TTSConfig, safe_url
from voice.http import shared_http_client
from voice.keys import preflight_key, static_key
from voice.stt.config import STTConfig

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Check",
    "CheckResult",
    "FragmentStore",
    "FragmentsCheck",
    "OpenAIEndpointCheck",
    "RedisCheck",
    "STTConfig",
    "Status",
    "TTSKeyCheck",
    "TTSModelCheck",
    "TTSVoiceCheck",
    "build_checks",
    "describe_error",
    "log_preflight",
    "playable_fragments",
    "preflight_at_start",
    "run_checks",
    "run_preflight",
    "url_database",
]

log = structlog.get_logger(__name__)

Status = Literal["ok", "warn", "fail"]
DEFAULT_TIMEOUT_S = 5.0
"""Seconds each check may take; a check still running then fails with 'no answer'."""
SCRATCH_TTL_S = 30
"""Expiry of the Redis scratch key, so a check killed between its write and its delete leaves nothing behind."""
LOAD_AUDIO = "voice-bridge load-audio"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's verdict. `detail` says what was found; `remedy` what to do (empty when all is well)."""

    name: str
    status: Status
    detail: str
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


class Check(Protocol):
    """One preflight check. `run` never raises for an outside fault: it returns a `CheckResult` instead."""

    @property
    def name(self) -> str:
        """Short identifier, printed in the report's second column (`redis`, `tts-key`, ...)."""

    @property
    def setting(self) -> str:
        """The setting an operator should look at when the check gets no answer in time (named in that result)."""

    async def run(self) -> CheckResult: ...


class FragmentStore(Protocol):
    """What the fragments check needs of the cache: `RedisCacheManager` (or any `AbstractCache` with a ping)."""

    async def ping(self) -> bool: ...

    async def get_audio_chunks(self, key: str) -> list[bytes] | None: ...


# --- running ----------------------------------------------------------------------------------------------


async def run_checks(checks: Sequence[Check], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[CheckResult]:
    """Run every check concurrently, each under `timeout_s`; results in the order of `checks`."""
    return list(await asyncio.gather(*(_run_one(check, timeout_s) for check in checks)))


async def _run_one(check: Check, timeout_s: float) -> CheckResult:
    try:
        async with asyncio.timeout(timeout_s):
            return await check.run()
    except TimeoutError:
        return CheckResult(check.name, "fail", f"no answer within {timeout_s:g} s",
                           f"check {check.setting}: is the service up and reachable from this host?")
    except Exception as exc:  # a bug in a check must not hide the other checks, nor stop serve
        log.exception("preflight_check_crashed", check=check.name)
        return CheckResult(check.name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}",
                           "report this as a bug, with this line")


async def run_preflight(
    settings: Settings,
    dialogue: Dialogue,
    *,
    cache: FragmentStore | None = None,
    stt: STTConfig | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[CheckResult]:
    """Run every check that applies to these settings and this dialogue. Never raises (bar cancellation).

    `cache` is where fragments are looked up: `serve` passes its runtime's cache; without one, the process's
    `RedisCacheManager` for `settings.cache` is used and closed afterwards. `stt` defaults to `settings.stt`.
    """
    problems: list[CheckResult] = []
    if stt is None:
        stt = settings.stt
    owned: RedisCacheManager | None = None
    store: FragmentStore | str = "no cache"
    if cache is not None:
        store = cache
    else:
        try:
            owned = RedisCacheManager(settings.cache)
            store = owned
        except (ConfigError, RuntimeError) as exc:  # a bad cluster URL; a cache of another configuration
            store = str(exc)
    try:
        results = await run_checks(build_checks(settings, dialogue, store, stt), timeout_s)
    finally:
        if owned is not None:
            await owned.close()
    return results + problems


def build_checks(settings: Settings, dialogue: Dialogue, store: FragmentStore | str,
                 stt: STTConfig | None) -> list[Check]:
    """The checks that apply: always Redis, the TTS account and the fragments; the LLM when the dialogue
    has `llm` items; the STT endpoint when `STT_PROVIDER=openai`. `store` is the cache, or why there is none."""
    fragments = playable_fragments(dialogue, settings.bridge.filler_names)
    try:
        url_database(settings.cache.redis_url)
    except ValueError:  # redis-py would read database 0 instead: a lookup there proves nothing
        store = "REDIS_URL names no valid database (see redis)"
    checks: list[Check] = [
        RedisCheck(settings.cache),
        TTSKeyCheck(settings.tts, serves_stt=stt is not None and stt.stt_provider == "elevenlabs"),
        TTSVoiceCheck(settings.tts),
        TTSModelCheck(settings.tts),
        FragmentsCheck(fragments, store),
    ]
    if dialogue.uses_llm:
        checks.append(llm_check(settings.llm))
    if stt is not None and stt.stt_provider == "openai":
        checks.append(stt_check(stt))
    if dialogue.listens:
        checks.append(ListeningCheck(dialogue, stt))
    return checks


class ListeningCheck:
    """A dialogue that listens needs a recognizer; without one its listening nodes take digits only."""

    name = "listening"
    setting = "STT_PROVIDER"

    def __init__(self, dialogue: Dialogue, stt: STTConfig | None) -> None:
        self.nodes = sorted(node.name for node in dialogue.nodes.values() if node.listen is not None)
        self.stt = stt

    async def run(self) -> CheckResult:
        nodes = ", ".join(self.nodes)
        if self.stt is not None and self.stt.enabled:
            return CheckResult(self.name, "ok", f"nodes {nodes} listen with STT_PROVIDER={self.stt.stt_provider}")
        return CheckResult(self.name, "warn", f"nodes {nodes} listen, but STT_PROVIDER=none: they will take "
                                              "digits only and go no_input",
                           "set STT_PROVIDER=elevenlabs (the TTS key and URL) or openai (STT_OPENAI_BASE_URL)")


async def preflight_at_start(settings: Settings, dialogue: Dialogue, *, cache: FragmentStore | None = None,
                             timeout_s: float = DEFAULT_TIMEOUT_S) -> list[CheckResult]:
    """What `serve` calls once its runtime is built: run the checks, log them (`log_preflight`), return them.

    Never raises (bar cancellation), so serve starts whatever the checks find. It takes up to `timeout_s`;
    to keep that off the start-up path, run it as a task beside the listener.
    """
    results = await run_preflight(settings, dialogue, cache=cache, timeout_s=timeout_s)
    log_preflight(results)
    return results


def log_preflight(results: Sequence[CheckResult], logger: Any = None) -> None:
    """Log the results at start-up: a warning `preflight_failed` per failure (fields check, detail, remedy),
    `preflight_warning` per warning, then `preflight_done` with the counts. Serve starts whatever they say."""
    logger = log if logger is None else logger
    for result in results:
        if result.status == "fail":
            logger.warning("preflight_failed", check=result.name, detail=result.detail, remedy=result.remedy)
        elif result.status == "warn":
            logger.info("preflight_warning", check=result.name, detail=result.detail, remedy=result.remedy)
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "warn", "fail")}
    logger.info("preflight_done", **counts)


# --- Redis ------------------------------------------------------------------------------------------------


def url_database(url: str) -> int:
    """The database number a Redis URL selects (`/N`, or `?db=N`; 0 when absent).

    redis-py silently uses database 0 for `/abc` or `/9x`; here they are a ValueError naming the text.
    """
    parts = urlsplit(url)
    candidates = []
    if parts.scheme != "unix" and parts.path.strip("/"):
        candidates.append(("after the last '/'", parts.path.strip("/")))
    for raw in parse_qs(parts.query).get("db", []):
        candidates.append(("in ?db=", raw))
    db = 0
    for where, raw in candidates:
        if not raw.isascii() or not raw.isdigit():
            raise ValueError(f"the database {raw!r} {where} is not a number; write e.g. /0")
        db = int(raw)
    return db


class RedisCheck:
    """Connect as the cache will, select the URL's database, write, read back and delete a scratch key."""

    name = "redis"
    setting = "REDIS_URL"

    def __init__(self, config: CacheConfig, token: str | None = None) -> None:
        self.config = config
        self.token = token or secrets.token_hex(8)

    def _client(self) -> Redis | RedisCluster:
        c = self.config
        common: dict[str, Any] = {"socket_timeout": c.redis_socket_timeout_s,
                                  "socket_connect_timeout": c.redis_connect_timeout_s, "retry": Retry(NoBackoff(), 0)}
        if c.is_cluster:
            seeds, kwargs = _cluster_spec(c.redis_url)
            return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], **common, **kwargs)
        return Redis.from_url(c.redis_url, **common)

    async def run(self) -> CheckResult:
        url = "REDIS_URL=" + safe_url(self.config.redis_url)
        where = "start Redis there, or set REDIS_URL to where it runs (redis://HOST:PORT/DB)"
        try:
            db = url_database(self.config.redis_url)
            if self.config.is_cluster and db:
                raise ValueError("a Redis Cluster has only database 0; remove the /<db> from the URL")
        except ValueError as exc:
            return self._fail(f"{url}: {exc}", "fix the database part of REDIS_URL")
        try:
            client = self._client()
        except (ConfigError, RedisError, RedisClusterException, ValueError) as exc:
            return self._fail(f"{url}: {exc}", "fix REDIS_URL")
        key = preflight_key(self.token)
        value = secrets.token_bytes(16)
        try:
            await client.set(key, value, ex=SCRATCH_TTL_S)
            read = await client.get(key)
            await client.delete(key)
        except AuthenticationError as exc:
            return self._fail(f"{url} refused the credentials: {exc}",
                              "put the right password in REDIS_URL: redis://:PASSWORD@HOST:PORT/DB")
        except ReadOnlyError as exc:
            return self._fail(f"{url} is read-only (a replica?): {exc}", "point REDIS_URL at the primary")
        except ResponseError as exc:
            if "DB index" in str(exc):
                return self._fail(f"{url}: database {db} cannot be selected: {exc}",
                                  "use a database this server has (0-15 unless its `databases` setting allows more)")
            if "NOAUTH" in str(exc) or "Authentication required" in str(exc):
                return self._fail(f"{url} needs a password: {exc}",
                                  "put the password in REDIS_URL: redis://:PASSWORD@HOST:PORT/DB")
            return self._fail(f"{url} refused the scratch write: {exc}", "check the Redis user's permissions")
        except RedisTimeoutError as exc:
            return self._fail(f"{url}: no answer ({exc})", where)
        except (RedisConnectionError, RedisClusterException, OSError) as exc:
            return self._fail(f"{url} unreachable: {exc}", where)
        except RedisError as exc:
            return self._fail(f"{url}: {type(exc).__name__}: {exc}", where)
        finally:
            try:
                await client.aclose()
            except (RedisError, RedisClusterException, OSError) as exc:  # must not hide the verdict
                log.debug("preflight_redis_close_failed", error=f"{type(exc).__name__}: {exc}")
        if read != value:
            return self._fail(f"{url}: wrote a scratch key and read back something else ({read!r:.40})",
                              "is REDIS_URL a real Redis (not a proxy that drops writes)?")
        return CheckResult(self.name, "ok", f"{safe_url(self.config.redis_url)} reachable, write/read ok")

    def _fail(self, detail: str, remedy: str) -> CheckResult:
        return CheckResult(self.name, "fail", detail, remedy)


# --- HTTP helpers -----------------------------------------------------------------------------------------


def describe_error(response: httpx.Response) -> str:
    """`401 invalid_api_key: Invalid API key`, from ElevenLabs' `detail` or OpenAI's `error` body, else the text."""
    code, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail, error = body.get("detail"), body.get("error")
        if isinstance(detail, dict):
            code, message = str(detail.get("status") or ""), str(detail.get("message") or "")
        elif isinstance(detail, list):
            message = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        elif isinstance(detail, str):
            message = detail
        elif isinstance(error, dict):
            code, message = str(error.get("code") or error.get("type") or ""), str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
    if not code and not message:
        message = " ".join(response.text.split())[:120] or response.reason_phrase
    head = f"{response.status_code} {code}".strip()
    return f"{head}: {message}" if message else head


def _timeout(connect_s: float, read_s: float) -> httpx.Timeout:
    return httpx.Timeout(read_s, connect=connect_s)


def _unreachable(exc: httpx.HTTPError) -> str:
    text = str(exc) or "no answer"
    return f"{type(exc).__name__}: {text}"


# --- ElevenLabs -------------------------------------------------------------------------------------------


class _ElevenLabsCheck:
    """What the three TTS checks share: the key, the base URL, the request."""

    name = "tts"
    setting = "ELEVENLABS_BASE_URL"

    def __init__(self, config: TTSConfig) -> None:
        self.config = config
        self.key = config.api_key.get_secret_value()

    async def get(self, path: str) -> httpx.Response:
        c = self.config
        return await shared_http_client().get(c.base_url + path, headers={"xi-api-key": self.key},
                                              timeout=_timeout(c.connect_timeout_s, c.read_timeout_s))

    async def read(self, path: str) -> httpx.Response | CheckResult:
        """The answer, or the warning 'not checked' when the key is unset, refused or the API unreachable
        (the tts-key check fails for those, with the remedy: one failure, said once)."""
        if not self.key:
            return CheckResult(self.name, "warn", "not checked: ELEVENLABS_API_KEY is not set (see tts-key)")
        try:
            response = await self.get(path)
        except httpx.HTTPError as exc:
            return CheckResult(self.name, "warn", f"not checked: {_unreachable(exc)} (see tts-key)")
        if response.status_code in (401, 403) or response.status_code == 429 or response.status_code >= 500:
            return CheckResult(self.name, "warn", f"not checked: {describe_error(response)}")
        return response


class TTSKeyCheck(_ElevenLabsCheck):
    """The key is set and accepted: `GET /v1/user`, the cheapest authenticated request (no characters billed)."""

    name = "tts-key"
    setting = "ELEVENLABS_BASE_URL"

    def __init__(self, config: TTSConfig, *, serves_stt: bool = False) -> None:
        super().__init__(config)
        self.serves_stt = serves_stt

    async def run(self) -> CheckResult:
        base = self.config.base_url
        if not self.key:
            return self._fail("ELEVENLABS_API_KEY is not set: every synthesis would fail and play the fallback",
                              "set ELEVENLABS_API_KEY to an API key of your ElevenLabs account")
        try:
            response = await self.get("/v1/user")
        except httpx.HTTPError as exc:
            return self._fail(f"cannot reach ELEVENLABS_BASE_URL={base}: {_unreachable(exc)}",
                              "check ELEVENLABS_BASE_URL (https://api.elevenlabs.io, or the emulator's URL) "
                              "and the network")
        status, what = response.status_code, describe_error(response)
        if status == 200:
            return CheckResult(self.name, *self._accepted(response))
        if status in (401, 403) and "missing_permissions" in what:
            return CheckResult(self.name, "warn", f"{what} (GET /v1/user)",
                               "give the key the user_read permission so that check can verify it; "
                               "synthesis may still work")
        if status in (401, 403):
            return self._fail(what, f"set ELEVENLABS_API_KEY to a valid key: {base} refuses this one")
        if status == 429 or status >= 500:
            return CheckResult(self.name, "warn", f"{what}: the key could not be verified", "run the check again")
        return self._fail(f"{what} (GET {base}/v1/user)",
                          f"check ELEVENLABS_BASE_URL={base}: is it the ElevenLabs API (no path)?")

    def _accepted(self, response: httpx.Response) -> tuple[Status, str, str]:
        stt = "; also the STT key" if self.serves_stt else ""
        try:
            sub = response.json().get("subscription") or {}
            used, limit = int(sub["character_count"]), int(sub["character_limit"])
            tier = sub.get("tier", "?")
        except (ValueError, KeyError, TypeError, AttributeError):
            return "ok", f"key accepted by {self.config.base_url}{stt}", ""
        usage = f"tier {tier}, {used:,} of {limit:,} characters used"
        if limit and used >= limit:
            return ("warn", f"key accepted, but the character quota is used up ({usage}){stt}",
                    "raise the quota or wait for its reset: syntheses will be refused")
        return "ok", f"key accepted by {self.config.base_url} ({usage}){stt}", ""

    def _fail(self, detail: str, remedy: str) -> CheckResult:
        return CheckResult(self.name, "fail", detail, remedy)


class TTSVoiceCheck(_ElevenLabsCheck):
    """`ELEVENLABS_VOICE_ID` exists for this account (a warning: the key check is the failure)."""

    name = "tts-voice"

    async def run(self) -> CheckResult:
        voice = self.config.voice_id
        answer = await self.read(f"/v1/voices/{voice}")
        if isinstance(answer, CheckResult):
            return answer
        if answer.status_code == 200:
            try:
                label = f" ({answer.json()['name']})"
            except (ValueError, KeyError, TypeError):
                label = ""
            return CheckResult(self.name, "ok", f"voice {voice}{label} found")
        return CheckResult(self.name, "warn", f"ELEVENLABS_VOICE_ID={voice}: {describe_error(answer)}",
                           "set ELEVENLABS_VOICE_ID to a voice of this account (GET /v1/voices lists them)")


class TTSModelCheck(_ElevenLabsCheck):
    """`ELEVENLABS_MODEL_ID` is among the models the API lists (a warning)."""

    name = "tts-model"

    async def run(self) -> CheckResult:
        model = self.config.model_id
        answer = await self.read("/v1/models")
        if isinstance(answer, CheckResult):
            return answer
        try:
            ids = [str(m["model_id"]) for m in answer.json()] if answer.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            ids = None
        if ids is None:
            return CheckResult(self.name, "warn", f"not checked: GET /v1/models: {describe_error(answer)}")
        if model in ids:
            return CheckResult(self.name, "ok", f"model {model} listed")
        return CheckResult(self.name, "warn", f"ELEVENLABS_MODEL_ID={model} is not among the models listed "
                                              f"({', '.join(ids) or 'none'})",
                           "set ELEVENLABS_MODEL_ID to one of them (eleven_flash_v2_5: fast, speaks Russian)")


# --- fragments --------------------------------------------------------------------------------------------


def playable_fragments(dialogue: Dialogue, fillers: Sequence[str],
                       fallback: str = FALLBACK_FRAGMENT) -> dict[str, list[str]]:
    """Every fragment a call of `dialogue` can play, each with where it is used (`node 'greeting'`,
    `FILLERS`, `the fallback`), in the order a reader of the dialogue meets them."""
    uses: dict[str, list[str]] = {}
    for node in dialogue.nodes.values():
        for item in node.play:
            if item.kind == "static":
                _add(uses, item.value, f"node {node.name!r}")
    for filler in fillers:
        _add(uses, filler, "FILLERS")
    _add(uses, fallback, "the fallback")
    return uses


def _add(uses: dict[str, list[str]], fragment: str, where: str) -> None:
    places = uses.setdefault(fragment, [])
    if where not in places:
        places.append(where)


class FragmentsCheck:
    """Every playable fragment is in the cache, where a call would read it (`voice.keys.static_key`)."""

    name = "fragments"
    setting = "REDIS_URL"

    def __init__(self, fragments: Mapping[str, Sequence[str]], store: FragmentStore | str) -> None:
        self.fragments = fragments
        self.store = store

    async def run(self) -> CheckResult:
        store = self.store
        if isinstance(store, str):
            return CheckResult(self.name, "warn", f"not checked: {store}")
        if not await store.ping():
            return CheckResult(self.name, "warn", f"not checked: Redis unreachable ({len(self.fragments)} "
                                                  "fragments to look up; see redis)")
        names = list(self.fragments)
        found = await asyncio.gather(*(store.get_audio_chunks(static_key(name)) for name in names))
        missing = [name for name, chunks in zip(names, found, strict=True) if not chunks]
        if not missing:
            return CheckResult(self.name, "ok", f"all {len(names)} fragments present ({', '.join(names)})")
        listed = ", ".join(f"{static_key(n)} ({', '.join(self.fragments[n])})" for n in missing)
        return CheckResult(
            self.name, "fail", f"{len(missing)} of {len(names)} missing: {listed}",
            f"load them: {LOAD_AUDIO} {' '.join(n + '.wav' for n in missing)} (a file NAME.wav becomes "
            "static:NAME; same REDIS_URL as serve)",
        )


# --- OpenAI-compatible endpoints (the LLM, the OpenAI STT) ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpenAIEndpointCheck:
    """An OpenAI-compatible endpoint answers with this key: `GET {base}/models`, and is `model` listed.

    Where `/models` is not served (404) and `completion` is set, a one-token chat completion proves the
    endpoint instead. Names of the settings come with it, so every message names what to change.
    """

    name: str
    base_url: str
    api_key: str
    model: str
    setting: str
    key_setting: str
    model_setting: str
    connect_timeout_s: float
    read_timeout_s: float
    completion: bool = False

    async def run(self) -> CheckResult:
        base = self.base_url.rstrip("/")
        if not base:
            return self._fail(f"{self.setting} is not set", f"set {self.setting} to the endpoint's /v1 URL")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = _timeout(self.connect_timeout_s, self.read_timeout_s)
        client = shared_http_client()
        try:
            response = await client.get(f"{base}/models", headers=headers, timeout=timeout)
            if response.status_code == 404 and self.completion:
                body = {"model": self.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
                response = await client.post(f"{base}/chat/completions", json=body, headers=headers,
                                             timeout=timeout)
                return self._verdict(response, f"POST {base}/chat/completions", listing=False)
        except httpx.HTTPError as exc:
            return self._fail(f"cannot reach {self.setting}={base}: {_unreachable(exc)}",
                              f"start the endpoint, or set {self.setting} to where it runs")
        return self._verdict(response, f"GET {base}/models", listing=True)

    def _verdict(self, response: httpx.Response, request: str, *, listing: bool) -> CheckResult:
        status, what = response.status_code, describe_error(response)
        if status in (401, 403):
            state = "is not set" if not self.api_key else "is refused"
            return self._fail(f"{what} ({request}): {self.key_setting} {state}",
                              f"set {self.key_setting} to a key this endpoint accepts")
        if status == 404:
            return self._fail(f"{what} ({request})",
                              f"check {self.setting}: it should end in /v1 (e.g. https://api.openai.com/v1)")
        if status == 429 or status >= 500:
            return CheckResult(self.name, "warn", f"{what} ({request}): not verified", "run the check again")
        if status != 200:
            return CheckResult(self.name, "warn", f"{what} ({request})",
                               f"check {self.model_setting}={self.model} and {self.setting}")
        if not listing:
            return CheckResult(self.name, "ok", f"{self.model} answered at {self.base_url}")
        try:
            ids = [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return CheckResult(self.name, "warn", f"{request} answered without a model list",
                               f"make sure {self.model_setting}={self.model} is served there")
        if self.model and self.model not in ids:
            shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
            return CheckResult(self.name, "warn",
                               f"reachable, key accepted, but {self.model_setting}={self.model} is not among "
                               f"the {len(ids)} models listed ({shown or 'none'})",
                               f"set {self.model_setting} to a model the endpoint serves")
        return CheckResult(self.name, "ok", f"{self.base_url} reachable, key accepted, model {self.model} listed")

    def _fail(self, detail: str, remedy: str) -> CheckResult:
        return CheckResult(self.name, "fail", detail, remedy)


def llm_check(config: LLMConfig) -> OpenAIEndpointCheck:
    return OpenAIEndpointCheck(
        name="llm", base_url=config.llm_base_url, api_key=config.llm_api_key.get_secret_value(), model=config.llm_model,
        setting="LLM_BASE_URL", key_setting="LLM_API_KEY", model_setting="LLM_MODEL",
        connect_timeout_s=config.llm_connect_timeout_s, read_timeout_s=config.llm_read_timeout_s, completion=True,
    )


def stt_check(config: STTConfig) -> OpenAIEndpointCheck:
    return OpenAIEndpointCheck(
        name="stt", base_url=config.stt_openai_base_url, api_key=config.openai_api_key, model=config.model_id,
        setting="STT_OPENAI_BASE_URL", key_setting="STT_OPENAI_API_KEY", model_setting="STT_MODEL",
        connect_timeout_s=config.stt_connect_timeout_s, read_timeout_s=config.stt_request_timeout_s,
    )
