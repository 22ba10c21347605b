"""Settings for the voice side, and the one mechanism every setting of the project goes through.

A setting is a dataclass field whose metadata names its environment variable, its parser and its help
text. `load()` builds a config object from the environment plus explicit overrides (command-line flags),
and `add_flags()` turns the same fields into argparse options, so a setting is declared exactly once and
an error always names the variable that was wrong.

`voice/` must not import `bridge/`, so the mechanism lives here and `bridge.config` builds on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a bad value. The message always starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


# --- parsers: each takes the raw string and returns the value or raises ValueError(problem) -------------


def parse_str(raw: str) -> str:
    return raw


def parse_nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _parse_range(convert: Callable[[str], T], expected: str, lo: T, hi: T) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(f"expected {expected}, got {raw!r}") from None
        if not lo <= value <= hi:  # type: ignore[operator]
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def parse_int_range(lo: int, hi: int) -> Callable[[str], int]:
    return _parse_range(int, "a whole number", lo, hi)


def parse_float_range(lo: float, hi: float) -> Callable[[str], float]:
    return _parse_range(float, "a number", lo, hi)


parse_port = parse_int_range(0, 65535)


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def parse_url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise ValueError(f"scheme must be one of {', '.join(schemes)}, got {value!r}")
        if not parts.hostname and parts.scheme != "unix":
            raise ValueError(f"has no host: {value!r}")
        return value.rstrip("/") if parts.scheme in {"http", "https"} else value

    return parse


def parse_json_object(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def parse_csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# --- declaring and loading ----------------------------------------------------------------------------


def setting(
    env: str,
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    *,
    secret: bool = False,
) -> Any:
    """Declare a dataclass field as a setting read from `env`."""
    meta = {"env": env, "parse": parse, "help": help, "secret": secret}
    if isinstance(default, (dict, list, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, repr=not secret)
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def _settings_of(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "env" in f.metadata]


def env_names(cls: type) -> list[str]:
    """The environment variables a config class reads, in declaration order."""
    return [f.metadata["env"] for f in _settings_of(cls)]


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from the environment, then apply overrides (already-typed values or raw strings).

    Raises ConfigError naming the first setting that is wrong.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in _settings_of(cls):
        name = f.metadata["env"]
        parse = f.metadata["parse"]
        if overrides.get(f.name) is not None:
            raw = overrides[f.name]
        elif name in environ:
            raw = environ[name]
        else:
            continue
        if isinstance(raw, str):
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(name, str(exc)) from None
        else:
            values[f.name] = raw
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # cross-field checks in __post_init__
        raise ConfigError(cls.__name__, str(exc)) from None


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one `--flag` per setting of `cls` (named after its variable), defaulting to None = environment."""
    group = parser.add_argument_group(f"{cls.__name__} (each flag overrides its environment variable)")
    for f in _settings_of(cls):
        name = f.metadata["env"]
        flag = "--" + name.lower().replace("_", "-")
        default = "(secret)" if f.metadata["secret"] else _describe_default(f)
        group.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=name,
            help=f"{f.metadata['help']} [env {name}; default {default}]",
        )


def flag_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of `cls` that were given on the command line, as raw strings for `load()`."""
    return {f.name: getattr(args, f.name) for f in _settings_of(cls) if getattr(args, f.name, None) is not None}


def _describe_default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default) if f.default != "" else "unset"
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "required"


# --- the voice side's settings ------------------------------------------------------------------------

PCM_RATES = {"pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000,
             "pcm_44100": 44100, "pcm_48000": 48000}
G711_FORMATS = {"ulaw_8000", "alaw_8000"}
OUTPUT_FORMATS = tuple(PCM_RATES) + tuple(sorted(G711_FORMATS))


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """Redis connection and cache policy. A `redis+cluster://` URL selects the cluster client."""

    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0",
                             parse_url("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
                             "Redis URL; redis+cluster://host:port for a Redis Cluster")
    redis_socket_timeout_s: float = setting("REDIS_SOCKET_TIMEOUT", 0.25, parse_float_range(0.01, 30),
                                            "seconds a Redis command may take before it counts as failed")
    redis_connect_timeout_s: float = setting("REDIS_CONNECT_TIMEOUT", 0.25, parse_float_range(0.01, 30),
                                             "seconds to wait for a Redis connection")
    breaker_cooloff_s: float = setting("REDIS_BREAKER_COOLOFF", 2.0, parse_float_range(0, 600),
                                       "after a Redis failure, skip Redis for this many seconds")
    tts_ttl_s: int = setting("TTS_CACHE_TTL", 30 * 86400, parse_int_range(1, 10 * 365 * 86400),
                             "seconds a cached synthesis lives in Redis")
    max_connections: int = setting("REDIS_MAX_CONNECTIONS", 64, parse_int_range(1, 10000),
                                   "size of the Redis connection pool")
    static_memo_ttl_s: float = setting("STATIC_MEMO_TTL", 5.0, parse_float_range(0, 3600),
                                       "seconds the bridge plays a static fragment from memory before reading "
                                       "it from Redis again (a fragment replaced by load-audio is heard within "
                                       "this time); 0 = read Redis on every use")

    @property
    def is_cluster(self) -> bool:
        return urlsplit(self.redis_url).scheme.endswith("+cluster")


@dataclasses.dataclass(frozen=True)
class TTSConfig:
    """ElevenLabs client settings. The WebSocket URL is derived from `base_url`."""

    api_key: str = setting("ELEVENLABS_API_KEY", "", parse_str, (
        "ElevenLabs API key; a value given as --elevenlabs-api-key is readable by any local user in "
        "/proc/PID/cmdline and ps: prefer the environment or the .env file"), secret=True)
    base_url: str = setting("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io", parse_url("http", "https"),
                            "ElevenLabs API base URL (a local emulator in tests and the demo)")
    voice_id: str = setting("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM", parse_nonempty, "voice to speak with")
    model_id: str = setting("ELEVENLABS_MODEL_ID", "eleven_flash_v2_5", parse_nonempty,
                            "model; eleven_flash_v2_5 is fast and speaks Russian")
    output_format: str = setting("ELEVENLABS_OUTPUT_FORMAT", "pcm_16000", parse_choice(*OUTPUT_FORMATS),
                                 "audio format asked of ElevenLabs (converted to 8 kHz slin on arrival)")
    voice_settings: dict[str, Any] = setting("ELEVENLABS_VOICE_SETTINGS", {}, parse_json_object,
                                             "JSON object of voice settings (stability, similarity_boost, ...)")
    connect_timeout_s: float = setting("TTS_CONNECT_TIMEOUT", 3.0, parse_float_range(0.05, 60),
                                       "seconds to connect to ElevenLabs")
    read_timeout_s: float = setting("TTS_READ_TIMEOUT", 10.0, parse_float_range(0.05, 300),
                                    "seconds to wait for the next audio bytes")
    max_retries: int = setting("TTS_MAX_RETRIES", 2, parse_int_range(0, 10),
                               "retries of a 429/5xx before any audio was received")
    retry_backoff_s: float = setting("TTS_RETRY_BACKOFF", 0.2, parse_float_range(0, 30),
                                     "first retry waits up to this many seconds (jittered, doubling each time)")
    keepalive_s: float = setting("TTS_KEEPALIVE", 15.0, parse_float_range(0.05, 170),
                                 "seconds between WebSocket keep-alive messages")

    @property
    def ws_base_url(self) -> str:
        """`https://host` -> `wss://host`, `http://host:port` -> `ws://host:port`."""
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest

    @property
    def sample_rate(self) -> int:
        return PCM_RATES.get(self.output_format, 8000)


DEFAULT_SYSTEM_PROMPT = (
    "You are the voice of a telephone service. Your words are spoken to the caller by speech synthesis: "
    "answer in short plain sentences in the caller's language, without lists, markdown or emoji."
)


def _parse_optional_url(raw: str) -> str:
    """Empty (no LLM), or an http(s) URL."""
    if not raw.strip():
        return ""
    return parse_url("http", "https")(raw)


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """LLM endpoint and conversation memory. Field names carry `llm_` because `serve` flags and
    `Settings.load` overrides are keyed by field name across every settings part."""

    llm_base_url: str = setting("LLM_BASE_URL", "", _parse_optional_url,
                                "OpenAI-compatible API base, /v1 included (e.g. https://api.openai.com/v1); "
                                "unset: no LLM, and dialogues with llm items are refused")
    llm_model: str = setting("LLM_MODEL", "gpt-4o-mini", parse_nonempty, "chat model for answers and summaries")
    llm_api_key: str = setting("LLM_API_KEY", "", parse_str, "bearer token for the LLM endpoint", secret=True)
    llm_system_prompt: str = setting("LLM_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, parse_nonempty,
                                     "system message sent first with every request")
    llm_max_tokens: int = setting("LLM_MAX_TOKENS", 0, parse_int_range(0, 100000),
                                  "max_tokens asked per answer; 0 = not sent (the model's own limit)")
    llm_connect_timeout_s: float = setting("LLM_CONNECT_TIMEOUT", 3.0, parse_float_range(0.05, 60),
                                           "seconds to connect to the LLM endpoint")
    llm_read_timeout_s: float = setting("LLM_READ_TIMEOUT", 10.0, parse_float_range(0.05, 600),
                                        "seconds to wait for the first, or the next, piece of an answer")
    llm_memory_chars: int = setting("LLM_MEMORY_CHARS", 4000, parse_int_range(50, 10_000_000),
                                    "conversation characters kept word for word; past this the older part "
                                    "is summarised by the LLM")
    llm_summary_ttl_s: int = setting("LLM_SUMMARY_TTL", 86400, parse_int_range(1, 365 * 86400),
                                     "seconds a conversation summary lives in Redis")

    @property
    def configured(self) -> bool:
        return bool(self.llm_base_url)
