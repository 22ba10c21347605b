"""The bridge's settings: one object, read once at start-up from the environment and `serve` flags.

`Settings` holds the telephony settings and embeds the voice side's `CacheConfig` and `TTSConfig` and the
LLM's `LLMConfig` (all from `voice.config`), so every component gets its slice from the same validated object.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from bridge.dialogue import Dialogue
from voice.config import (
    CacheConfig,
    LLMConfig,
    ConfigError,
    TTSConfig,
    add_flags,
    flag_overrides,
    load,
    parse_choice,
    parse_csv,
    parse_float_range,
    parse_int_range,
    parse_nonempty,
    parse_port,
    parse_str,
    setting,
)

__all__ = ["BridgeConfig", "LLMConfig", "Settings", "ConfigError", "add_settings_flags", "settings_from_args", "require_llm_settings"]


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    """Telephony-side settings."""

    host: str = setting("BRIDGE_HOST", "127.0.0.1", parse_nonempty, "address to listen on")
    port: int = setting("BRIDGE_PORT", 9092, parse_port, "AudioSocket TCP port (0 = any free port)")
    max_calls: int = setting("BRIDGE_MAX_CALLS", 2000, parse_int_range(1, 100000),
                             "concurrent calls accepted; more are closed with a log line")
    max_pending: int = setting("BRIDGE_MAX_PENDING", 0, parse_int_range(0, 100000),
                               "connections still waiting for their UUID at once, apart from the calls; "
                               "0 = max(64, BRIDGE_MAX_CALLS / 10)")
    grace_s: float = setting("BRIDGE_SHUTDOWN_GRACE", 10.0, parse_float_range(0, 3600),
                             "on SIGTERM, seconds calls may go on before they are hung up")
    outbound_limit_bytes: int = setting("BRIDGE_OUTBOUND_LIMIT", 64 * 1024, parse_int_range(4096, 16 * 2**20),
                                        "bytes a peer may leave unread before its call is dropped")
    first_message_timeout_s: float = setting("BRIDGE_UUID_TIMEOUT", 5.0, parse_float_range(0.1, 600),
                                             "seconds a new connection has to send its UUID")
    queue_frames: int = setting("BRIDGE_QUEUE_FRAMES", 4, parse_int_range(1, 500),
                                "20 ms frames a call may queue ahead of the clock (small: barge-in cuts fast)")
    dialogue_file: str = setting("DIALOGUE_FILE", "", parse_str, "dialogue map (TOML); default: the sample")
    filler_names: tuple[str, ...] = setting("FILLERS", ("filler_tak", "filler_aga"), parse_csv,
                                            "static fragments played while a synthesis is slow")
    filler_after_s: float = setting("FILLER_AFTER", 0.4, parse_float_range(0, 30),
                                    "seconds without TTS audio before a filler plays")
    barge_in_rms: int = setting("BARGE_IN_RMS", 600, parse_int_range(1, 32767),
                                "caller audio louder than this (RMS of s16 samples) counts as speech")
    barge_in_min_ms: int = setting("BARGE_IN_MIN_MS", 60, parse_int_range(0, 2000),
                                   "milliseconds of continuous caller speech that stop a prompt")
    log_level: str = setting("LOG_LEVEL", "info", parse_choice("debug", "info", "warning", "error"), "log level")
    log_format: str = setting("LOG_FORMAT", "auto", parse_choice("auto", "json", "console"),
                              "log format; auto = console on a terminal, else json")
    metrics_port: int = setting("METRICS_PORT", 0, parse_port, "Prometheus /metrics, /healthz, /readyz port; 0 = off")
    metrics_host: str = setting("METRICS_HOST", "127.0.0.1", parse_str,
                                "address the metrics port listens on (loopback unless set; empty = BRIDGE_HOST)")
    workers: int = setting("BRIDGE_WORKERS", 1, parse_int_range(1, 256),
                           "processes sharing the AudioSocket port (SO_REUSEPORT), one core each; worker i "
                           "serves metrics on METRICS_PORT + i")


@dataclasses.dataclass(frozen=True)
class Settings:
    bridge: BridgeConfig
    cache: CacheConfig
    tts: TTSConfig
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every setting; overrides are keyed by field name (e.g. `port=0`, `redis_url=...`)."""
        environ = os.environ if environ is None else environ
        parts = {}
        for name, part_cls in (("bridge", BridgeConfig), ("cache", CacheConfig), ("tts", TTSConfig),
                                ("llm", LLMConfig)):
            own = {f.name for f in dataclasses.fields(part_cls)}
            parts[name] = load(part_cls, environ, **{k: v for k, v in overrides.items() if k in own})
        return cls(**parts)


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for part_cls in (BridgeConfig, CacheConfig, TTSConfig, LLMConfig):
        add_flags(parser, part_cls)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    for part_cls in (BridgeConfig, CacheConfig, TTSConfig, LLMConfig):
        overrides.update(flag_overrides(args, part_cls))
    return Settings.load(environ, **overrides)


def require_llm_settings(dialogue: Dialogue, config: LLMConfig) -> None:
    """A dialogue with `llm` items cannot run without an LLM: raise ConfigError naming LLM_BASE_URL."""
    if dialogue.uses_llm and not config.configured:
        nodes = sorted({n.name for n in dialogue.nodes.values() if any(i.kind == "llm" for i in n.play)})
        raise ConfigError(
            "LLM_BASE_URL",
            f"not set, but the dialogue {dialogue.source} has llm items (node {', '.join(map(repr, nodes))}); "
            "set it to an OpenAI-compatible endpoint such as https://api.openai.com/v1",
        )
