"""Settings for the voice side, and the one mechanism every setting of the project goes through.

Settings are pydantic models, declared once with `setting(ENV_NAME, default, help)`:

- A *part* (`CacheConfig`, `TTSConfig`, `LLMConfig` here; `BridgeConfig` in `bridge.config`) is a frozen model.
  Each field carries its environment variable as its validation alias, so `CacheConfig(redis_url=...)` builds
  one from keyword arguments (tests, tools) and the same field reads `REDIS_URL` when loaded.
- A *composed* model (`bridge.config.Settings`, `LogSettings`, the tools' own small models) is a
  pydantic-settings `EnvSettings`. `Model.load()` reads it, from these sources, highest first: explicit
  overrides (the `serve` flags), the process environment, a `.env` file in the working directory. Every field
  is found by its own flat variable name (`REDIS_URL`, not pydantic-settings' nested `CACHE__REDIS_URL`), so
  the names operators know stay. Built directly (`Settings(bridge=...)`), a model reads nothing but its
  arguments, like any other model.

A bad value is a `ConfigError` that names the variable and the value (`BRIDGE_PORT: must be between 0 and
65535, got 99999`); pydantic's ValidationError becomes one in a single place, `config_error`. Keys are
`SecretStr`; a password inside a URL is masked wherever a value is quoted in a message.

`voice/` must not import `bridge/`, so the mechanism lives here and `bridge.config` builds on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Self, TypeVar, cast
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_FILE = ".env"
"""Read from the working directory when present; the process environment wins over it."""

P = TypeVar("P", bound=BaseModel)


class ConfigError(ValueError):
    """A setting has a bad value. The message always starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{user}:***@{hosts}", parts.path, parts.query, parts.fragment))


# --- value types: each validator raises ValueError(problem), the problem quoting the value ---------------


def between(lo: float, hi: float) -> AfterValidator:
    """A number within [lo, hi] (checked after pydantic has converted the text)."""

    def check(value: Any) -> Any:
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return AfterValidator(check)


def one_of(*choices: str) -> BeforeValidator:
    """One of `choices`, compared without case or surrounding spaces."""

    def check(value: Any) -> Any:
        normal = value.strip().lower() if isinstance(value, str) else value
        if normal not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return normal

    return BeforeValidator(check)


def _nonempty(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"must not be empty, got {value!r}")
        return value.strip()
    return value


def url(*schemes: str, optional: bool = False) -> BeforeValidator:
    """A URL with one of `schemes` and a host (a unix socket needs none); http(s) lose a trailing slash.

    `optional`: empty (or blank) is allowed and means "not set".
    """

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # pydantic's own check names the wrong type
        value = value.strip()
        if optional and not value:
            return ""
        try:
            parts = urlsplit(value)
            hostname = parts.hostname
        except ValueError as exc:
            raise ValueError(f"is not a URL ({exc}), got {safe_url(value)!r}") from None
        if parts.scheme not in schemes:
            raise ValueError(f"scheme must be one of {', '.join(schemes)}, got {safe_url(value)!r}")
        if not hostname and parts.scheme != "unix":
            raise ValueError(f"has no host: {safe_url(value)!r}")
        return value.rstrip("/") if parts.scheme in {"http", "https"} else value

    return BeforeValidator(check)


_WHOLE = re.compile(r"[0-9]+")


def _redis_database(value: str) -> str:
    """The database of a Redis URL (`/N` or `?db=N`) is a whole number: redis-py would silently use 0 instead."""
    parts = urlsplit(value)
    candidates = [] if parts.scheme == "unix" else [parts.path.strip("/")]  # a unix URL's path is the socket
    candidates += parse_qs(parts.query).get("db", [])
    for db in candidates:
        if db and not _WHOLE.fullmatch(db):
            raise ValueError(f"database {db!r} is not a whole number (e.g. /0), got {safe_url(value)!r}")
    return value


def _json_object(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos}), got {value!r}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"must be a JSON object, got {value!r}")
    return parsed


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


Port = Annotated[int, between(0, 65535)]
NonEmpty = Annotated[str, BeforeValidator(_nonempty)]
HttpUrl = Annotated[str, url("http", "https")]
OptionalHttpUrl = Annotated[str, url("http", "https", optional=True)]
RedisUrl = Annotated[str, url("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
                     AfterValidator(_redis_database)]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]
CsvList = Annotated[tuple[str, ...], BeforeValidator(_csv)]
LogLevel = Annotated[str, one_of("debug", "info", "warning", "error")]
LogFormat = Annotated[str, one_of("auto", "json", "console")]


# --- declaring ------------------------------------------------------------------------------------------


def setting(env: str, default: Any, help: str) -> Any:
    """Declare a field read from the environment variable `env`; `help` is shown by `--help`."""
    if isinstance(default, (dict, list, set)):
        return Field(default_factory=functools.partial(type(default), default), validation_alias=env,
                     description=help)
    return Field(default, validation_alias=env, description=help)


class SettingsPart(BaseModel):
    """A group of settings: built from keyword arguments by field name, or from variables by their names."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """A password inside a URL-valued setting is masked in repr, as SecretStr values are."""
        for name, value in super().__repr_args__():
            yield name, safe_url(value) if isinstance(value, str) and "@" in value else value


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable of a field (its validation alias), else the field's own name."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else name


def env_names(cls: type[BaseModel]) -> list[str]:
    """The environment variables a model reads, in declaration order (a composed model's parts included)."""
    names: list[str] = []
    for name, field in cls.model_fields.items():
        part = _part_type(field)
        names += env_names(part) if part is not None else [env_name(name, field)]
    return names


def is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr


def secret_settings(cls: type[BaseModel]) -> list[tuple[str, str]]:
    """(field name, variable) of every secret setting of a model, its parts' included."""
    found: list[tuple[str, str]] = []
    for name, field in cls.model_fields.items():
        part = _part_type(field)
        if part is not None:
            found += secret_settings(part)
        elif is_secret(field):
            found.append((name, env_name(name, field)))
    return found


def _part_type(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


# --- reading ---------------------------------------------------------------------------------------------


class FlatEnvSource(PydanticBaseSettingsSource):
    """Values from one mapping of variables (the environment, a `.env` file, an explicit mapping), each field
    found by its own variable name and a part's fields gathered under the part: pydantic-settings' own
    environment source would look for `CACHE__REDIS_URL` where operators set `REDIS_URL`."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ gathers every field at once

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            part = _part_type(field)
            if part is None:
                env = env_name(name, field)
                if self.variables.get(env) is not None:
                    found[env] = self.variables[env]
                continue
            values = {env: self.variables[env] for env in env_names(part) if self.variables.get(env) is not None}
            if values:
                found[name] = values
        return found


@dataclasses.dataclass(frozen=True)
class _Load:
    environ: Mapping[str, str] | None  # None: the process environment and the .env file


_LOADING: ContextVar[_Load | None] = ContextVar("voice_config_loading", default=None)
"""Set by `EnvSettings.load` for the duration of one construction: which variables the sources read.

pydantic-settings builds its sources inside the constructor, from class configuration only; this is how
`load(environ)` hands it an explicit mapping (tests, the demo) instead of the process environment."""


def _variables(source: PydanticBaseSettingsSource) -> Mapping[str, str | None]:
    return source.env_vars if isinstance(source, EnvSettingsSource) else {}


class EnvSettings(BaseSettings):
    """A model read from variables by `load()`; see the module docstring for the sources and their order."""

    model_config = SettingsConfigDict(case_sensitive=True, env_file=ENV_FILE, env_file_encoding="utf-8",
                                      frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        loading = _LOADING.get()
        if loading is None:  # built from keyword arguments: nothing else is read
            return (init_settings,)
        if loading.environ is not None:
            return (init_settings, FlatEnvSource(settings_cls, loading.environ))
        return (init_settings, FlatEnvSource(settings_cls, _variables(env_settings)),
                FlatEnvSource(settings_cls, _variables(dotenv_settings)))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read every setting. `environ`: None = the process environment over the `.env` file; a mapping
        replaces both. `overrides` (None = not given) are keyed by field name, across parts (`port=0`,
        `redis_url=...`), and win over both; raw strings (flags) and typed values are accepted alike.

        Raises ConfigError naming the first variable that is wrong.
        """
        given = _overrides_by_env(cls, overrides)
        token = _LOADING.set(_Load(environ))
        try:
            return cls(**given)
        except ValidationError as exc:
            raise config_error(exc, cls) from None
        finally:
            _LOADING.reset(token)


def _overrides_by_env(cls: type[BaseModel], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{field name: value} -> the shape the sources produce ({part: {ENV: value}} / {ENV: value}), so an
    override and a variable for the same setting meet under one key and the higher source wins."""
    where: dict[str, tuple[str | None, str]] = {}
    for name, field in cls.model_fields.items():
        part = _part_type(field)
        if part is None:
            where[name] = (None, env_name(name, field))
        else:
            where.update({sub: (name, env_name(sub, f)) for sub, f in part.model_fields.items()})
    given: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in where:
            raise TypeError(f"{cls.__name__} has no setting named {name!r}")
        part_name, env = where[name]
        if part_name is None:
            given[env] = value
        else:
            given.setdefault(part_name, {})[env] = value
    return given


@functools.cache
def _holder(part: type[BaseModel]) -> type[EnvSettings]:
    return create_model(f"{part.__name__}Settings", __base__=EnvSettings,
                        part=(part, Field(default_factory=part)))


def load(part: type[P], environ: Mapping[str, str] | None = None, **overrides: Any) -> P:
    """One part alone, read like `EnvSettings.load` (a voice-side tool needs no more, e.g. `load-audio`)."""
    return cast(P, _holder(part).load(environ, **overrides).part)  # type: ignore[attr-defined]


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a `load(environ)` sees: the given mapping, or the `.env` file overlaid by the process
    environment (the CLI registers the secrets among them for masking before anything is logged)."""
    if environ is not None:
        return dict(environ)
    dotenv = DotEnvSettingsSource(EnvSettings, env_file=ENV_FILE, case_sensitive=True).env_vars
    return {**{k: v for k, v in dotenv.items() if v is not None}, **os.environ}


# --- errors ----------------------------------------------------------------------------------------------


_TYPE_PROBLEMS = {
    "int_parsing": "expected a whole number", "int_type": "expected a whole number",
    "int_from_float": "expected a whole number", "float_parsing": "expected a number",
    "float_type": "expected a number", "finite_number": "expected a finite number",
}


def config_error(exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    """The one translation of pydantic's errors: the first wrong variable, what was wrong, the value."""
    errors = exc.errors()
    located = [_locate(model, error["loc"]) for error in errors]
    env, field = located[0]
    problem = _problem(errors[0], field)
    others = sorted({name for name, _ in located[1:]} - {env})
    if others:
        problem += f" (also wrong: {', '.join(others)})"
    return ConfigError(env, problem)


def _locate(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, FieldInfo | None]:
    """The variable and field an error's location points at (a location holds field names or aliases)."""
    cls: type[BaseModel] = model
    for item in loc:
        if not isinstance(item, str):
            break
        match = next(((n, f) for n, f in cls.model_fields.items() if item in (n, env_name(n, f))), None)
        if match is None:
            return item, None  # e.g. an unknown keyword argument
        name, field = match
        part = _part_type(field)
        if part is None:
            return env_name(name, field), field
        cls = part
    return cls.__name__, None


def _problem(error: ErrorDetails, field: FieldInfo | None) -> str:
    value = error.get("input")
    shown = "***" if field is not None and is_secret(field) else (
        safe_url(value) if isinstance(value, str) else value)
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if error["type"] in _TYPE_PROBLEMS:
        return f"{_TYPE_PROBLEMS[error['type']]}, got {shown!r}"
    if error["type"] == "extra_forbidden":
        return "is not a setting"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {shown!r}"


# --- command-line flags ----------------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, cls: type[BaseModel], only: Collection[str] | None = None) -> None:
    """Add one `--flag` per setting of `cls` (named after its variable), defaulting to None = environment.

    `only`: the variables to offer (a tool that uses a few settings of a part lists only those).
    """
    group = parser.add_argument_group(f"{cls.__name__} (each flag overrides its environment variable)")
    for name, field in cls.model_fields.items():
        env = env_name(name, field)
        if only is not None and env not in only:
            continue
        group.add_argument(
            "--" + env.lower().replace("_", "-"),
            dest=name,
            default=None,
            metavar=env,
            help=help_with_default(field.description or "", describe_default(field), env=env),
        )


def flag_overrides(args: argparse.Namespace, cls: type[BaseModel]) -> dict[str, Any]:
    """The flags of `cls` that were given on the command line, as raw strings for `load()`."""
    return {name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None}


def help_with_default(text: str, default: object, *, env: str | None = None) -> str:
    """The one notation of every `--help` for a default: `TEXT [default X]`, or `TEXT [env VAR; default X]`
    for an option an environment variable also sets. `default` is shown as it would be written
    (`show_value`); a str is taken as already written (e.g. `unset`, `a random one`). Safe for argparse's
    %-formatting."""
    shown = default if isinstance(default, str) else show_value(default)
    where = f"env {env}; " if env else ""
    return f"{text} [{where}default {shown}]".replace("%", "%%")


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, default: Any,
               help: str, env: str | None = None, **kwargs: Any) -> argparse.Action:
    """`parser.add_argument` with the default stated once: given to argparse and shown by `help_with_default`."""
    return parser.add_argument(*flags, default=default, help=help_with_default(help, default, env=env), **kwargs)


def show_value(value: object) -> str:
    """A value as an operator would write it in the environment or on the command line: `unset` for
    nothing, true/false, comma-separated lists, JSON objects, whole floats without `.0`."""
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return ",".join(show_value(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def describe_default(field: FieldInfo) -> str:
    """How `--help` shows a setting's default: a secret's never (`unset` when it has none), an empty one as
    `unset`."""
    default = field.get_default(call_default_factory=True)
    if is_secret(field):
        return "unset" if not default.get_secret_value() else "(secret)"
    return show_value(default)


# --- logging settings (every subcommand) -----------------------------------------------------------------


def log_level_setting() -> Any:
    return setting("LOG_LEVEL", "info", "log level")


def log_format_setting() -> Any:
    return setting("LOG_FORMAT", "auto", "log format; auto = console on a terminal, else json")


class LogSettings(EnvSettings):
    """LOG_LEVEL and LOG_FORMAT, read by the CLI for every subcommand (`serve` also has them as flags: the
    bridge's settings declare the same two fields with the same declarations)."""

    log_level: LogLevel = log_level_setting()
    log_format: LogFormat = log_format_setting()


# --- the voice side's settings ------------------------------------------------------------------------

from voice.formats import G711_FORMATS, OUTPUT_FORMATS, PCM_RATES, source_rate  # noqa: E402  (the one table; re-exported)


class CacheConfig(SettingsPart):
    """Redis connection and cache policy. A `redis+cluster://` URL selects the cluster client."""

    redis_url: RedisUrl = setting("REDIS_URL", "redis://127.0.0.1:6379/0",
                                  "Redis URL; redis+cluster://host:port for a Redis Cluster")
    redis_socket_timeout_s: Annotated[float, between(0.01, 30)] = setting(
        "REDIS_SOCKET_TIMEOUT", 0.25, "seconds a Redis command may take before it counts as failed")
    redis_connect_timeout_s: Annotated[float, between(0.01, 30)] = setting(
        "REDIS_CONNECT_TIMEOUT", 0.25, "seconds to wait for a Redis connection")
    breaker_cooloff_s: Annotated[float, between(0, 600)] = setting(
        "REDIS_BREAKER_COOLOFF", 2.0, "after a Redis failure, skip Redis for this many seconds")
    tts_ttl_s: Annotated[int, between(1, 10 * 365 * 86400)] = setting(
        "TTS_CACHE_TTL", 30 * 86400, "seconds a cached synthesis lives in Redis")
    max_connections: Annotated[int, between(1, 10000)] = setting(
        "REDIS_MAX_CONNECTIONS", 64, "size of the Redis connection pool")
    static_memo_ttl_s: Annotated[float, between(0, 3600)] = setting(
        "STATIC_MEMO_TTL", 5.0, "seconds the bridge plays a static fragment from memory before reading it from "
        "Redis again (a fragment replaced by load-audio is heard within this time); 0 = read Redis on every use")
    # --- loudness: one level for recorded fragments (load-audio) and synthesized speech (as it streams) ---
    audio_normalize: bool = setting("AUDIO_NORMALIZE", True,
                                    "bring fragments (at load-audio) and synthesized speech (as it streams) to "
                                    "AUDIO_TARGET_DBFS; false for recordings mastered by hand")
    audio_target_dbfs: Annotated[float, between(-40, -6)] = setting(
        "AUDIO_TARGET_DBFS", -20.0, "target active speech level, dB RMS relative to full scale")

    @property
    def loudness_target(self) -> float | None:
        """The level audio is brought to, or None when levelling is off."""
        return self.audio_target_dbfs if self.audio_normalize else None

    @property
    def is_cluster(self) -> bool:
        return urlsplit(self.redis_url).scheme.endswith("+cluster")


class TTSConfig(SettingsPart):
    """ElevenLabs client settings. The WebSocket URL is derived from `base_url`."""

    api_key: SecretStr = setting("ELEVENLABS_API_KEY", SecretStr(""), (
        "ElevenLabs API key; a value given as --elevenlabs-api-key is readable by any local user in "
        "/proc/PID/cmdline and ps: prefer the environment or the .env file"))
    base_url: HttpUrl = setting("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io",
                                "ElevenLabs API base URL (a local emulator in tests and the demo)")
    voice_id: NonEmpty = setting("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM", "voice to speak with")
    model_id: NonEmpty = setting("ELEVENLABS_MODEL_ID", "eleven_flash_v2_5",
                                 "model; eleven_flash_v2_5 is fast and speaks Russian")
    output_format: Annotated[str, one_of(*OUTPUT_FORMATS)] = setting(
        "ELEVENLABS_OUTPUT_FORMAT", "pcm_16000",
        "audio format asked of ElevenLabs (converted to 8 kHz slin on arrival)")
    voice_settings: JsonObject = setting("ELEVENLABS_VOICE_SETTINGS", {},
                                         "JSON object of voice settings (stability, similarity_boost, ...)")
    connect_timeout_s: Annotated[float, between(0.05, 60)] = setting("TTS_CONNECT_TIMEOUT", 3.0,
                                                         "seconds to connect to ElevenLabs")
    read_timeout_s: Annotated[float, between(0.05, 300)] = setting("TTS_READ_TIMEOUT", 10.0,
                                                       "seconds to wait for the next audio bytes")
    max_retries: Annotated[int, between(0, 10)] = setting("TTS_MAX_RETRIES", 2,
                                             "retries of a 429/5xx before any audio was received")
    retry_backoff_s: Annotated[float, between(0, 30)] = setting(
        "TTS_RETRY_BACKOFF", 0.2, "first retry waits up to this many seconds (jittered, doubling each time)")
    keepalive_s: Annotated[float, between(0.05, 170)] = setting("TTS_KEEPALIVE", 15.0,
                                                    "seconds between WebSocket keep-alive messages")

    @property
    def ws_base_url(self) -> str:
        """`https://host` -> `wss://host`, `http://host:port` -> `ws://host:port`."""
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest

    @property
    def sample_rate(self) -> int:
        return source_rate(self.output_format)


DEFAULT_SYSTEM_PROMPT = (
    "You are the voice of a telephone service. Your words are spoken to the caller by speech synthesis: "
    "answer in short plain sentences in the caller's language, without lists, markdown or emoji."
)


class LLMConfig(SettingsPart):
    """LLM endpoint and conversation memory. Field names carry `llm_` because `serve` flags and
    `Settings.load` overrides are keyed by field name across every settings part."""

    llm_base_url: OptionalHttpUrl = setting(
        "LLM_BASE_URL", "", "OpenAI-compatible API base, /v1 included (e.g. https://api.openai.com/v1); "
        "unset: no LLM, and dialogues with llm items are refused")
    llm_model: NonEmpty = setting("LLM_MODEL", "gpt-4o-mini", "chat model for answers and summaries")
    llm_api_key: SecretStr = setting("LLM_API_KEY", SecretStr(""), "bearer token for the LLM endpoint")
    llm_system_prompt: NonEmpty = setting("LLM_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT,
                                          "system message sent first with every request")
    llm_max_tokens: Annotated[int, between(0, 100000)] = setting(
        "LLM_MAX_TOKENS", 0, "max_tokens asked per answer; 0 = not sent (the model's own limit)")
    llm_connect_timeout_s: Annotated[float, between(0.05, 60)] = setting("LLM_CONNECT_TIMEOUT", 3.0,
                                                             "seconds to connect to the LLM endpoint")
    llm_read_timeout_s: Annotated[float, between(0.05, 600)] = setting(
        "LLM_READ_TIMEOUT", 10.0, "seconds to wait for the first, or the next, piece of an answer")
    llm_memory_chars: Annotated[int, between(50, 10_000_000)] = setting(
        "LLM_MEMORY_CHARS", 4000, "conversation characters kept word for word; past this the older part is "
        "summarised by the LLM")
    llm_summary_ttl_s: Annotated[int, between(1, 365 * 86400)] = setting("LLM_SUMMARY_TTL", 86400,
                                                            "seconds a conversation summary lives in Redis")

    @property
    def configured(self) -> bool:
        return bool(self.llm_base_url)


__all__ = [
    "ConfigError", "EnvSettings", "SettingsPart", "LogSettings", "CacheConfig", "TTSConfig", "LLMConfig",
    "setting", "load", "add_flags", "flag_overrides", "env_names", "env_name", "is_secret", "secret_settings",
    "safe_url",
    "config_error", "read_environment", "describe_default", "help_with_default", "show_value", "add_option",
    "Port", "NonEmpty", "HttpUrl", "RedisUrl",
    "LogLevel", "LogFormat", "between", "one_of", "url", "PCM_RATES", "G711_FORMATS",
    "OUTPUT_FORMATS", "DEFAULT_SYSTEM_PROMPT", "ENV_FILE",
]
