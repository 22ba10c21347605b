"""The bridge's settings: one object, read once at start-up from `serve` flags, the environment and `.env`.

`Settings` holds the telephony settings and embeds the voice side's `CacheConfig`, `TTSConfig` and `LLMConfig`
(all from `voice.config`, which also holds the mechanism), so every component gets its part from the same
validated object.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

from bridge.dialogue import Dialogue
from voice.config import (
    CacheConfig,
    ConfigError,
    CsvList,
    EnvSettings,
    LLMConfig,
    LogFormat,
    LogLevel,
    NonEmpty,
    Port,
    SettingsPart,
    TTSConfig,
    add_flags,
    between,
    flag_overrides,
    log_format_setting,
    log_level_setting,
    one_of,
    setting,
)
from voice.stt.config import STTConfig

__all__ = ["BridgeConfig", "CacheConfig", "LLMConfig", "TTSConfig", "Settings", "ConfigError", "add_settings_flags",
           "settings_from_args", "require_llm_settings"]


class BridgeConfig(SettingsPart):
    """Telephony-side settings."""

    host: NonEmpty = setting("BRIDGE_HOST", "127.0.0.1", "address to listen on")
    port: Port = setting("BRIDGE_PORT", 9092, "AudioSocket TCP port (0 = any free port)")
    max_calls: Annotated[int, between(1, 100000)] = setting(
        "BRIDGE_MAX_CALLS", 2000, "concurrent calls accepted; more are closed with a log line")
    max_pending: Annotated[int, between(0, 100000)] = setting(
        "BRIDGE_MAX_PENDING", 0, "connections still waiting for their UUID at once, apart from the calls; "
        "0 = max(64, BRIDGE_MAX_CALLS / 10)")
    grace_s: Annotated[float, between(0, 3600)] = setting(
        "BRIDGE_SHUTDOWN_GRACE", 10.0, "on SIGTERM, seconds calls may go on before they are hung up")
    outbound_limit_bytes: Annotated[int, between(4096, 16 * 2**20)] = setting(
        "BRIDGE_OUTBOUND_LIMIT", 64 * 1024, "bytes a peer may leave unread before its call is dropped")
    first_message_timeout_s: Annotated[float, between(0.1, 600)] = setting(
        "BRIDGE_UUID_TIMEOUT", 5.0, "seconds a new connection has to send its UUID")
    native_tick: bool = setting(
        "BRIDGE_NATIVE_TICK", True, "pace calls with the C tick (bridge._outlet) where it was built; false = the "
        "pure-Python reference (same behaviour, more CPU per call)")
    queue_frames: Annotated[int, between(1, 500)] = setting(
        "BRIDGE_QUEUE_FRAMES", 4, "20 ms frames a call may queue ahead of the clock (small: barge-in cuts fast)")
    overload_late_ms: Annotated[float, between(0, 1000)] = setting(
        "BRIDGE_OVERLOAD_LATE_MS", 10.0, "media clock lateness that counts as late for overload admission: while "
        "a fifth of its wake-ups in 0.3 s, in most of that time, are this late, new connections are refused "
        "(listening paused); 0 = off")
    overload_min_calls: Annotated[int, between(0, 100000)] = setting(
        "BRIDGE_OVERLOAD_MIN_CALLS", 50, "calls on the media clock below which lateness never pauses admission")
    overload_busy: Annotated[float, between(0, 1)] = setting(
        "BRIDGE_OVERLOAD_BUSY", 0.9, "share of one core the event loop may use (over 0.3 s, with "
        "BRIDGE_OVERLOAD_MIN_CALLS calls up) before new connections are refused, before any frame is late; "
        "admission resumes at 0.1 below it; 0 = only lateness pauses admission")
    overload_calm_s: Annotated[float, between(0, 600)] = setting(
        "BRIDGE_OVERLOAD_CALM", 2.0, "seconds the media clock must keep time before a paused bridge listens again")
    dialogue_file: str = setting("DIALOGUE_FILE", "", "dialogue map (TOML); unset: the bundled sample")
    filler_names: CsvList = setting("FILLERS", ("filler_tak", "filler_aga"),
                                    "static fragments played while a synthesis is slow")
    filler_after_s: Annotated[float, between(0, 30)] = setting(
        "FILLER_AFTER", 0.4, "seconds without TTS audio before a filler plays")
    barge_in_rms: Annotated[int, between(1, 32767)] = setting(
        "BARGE_IN_RMS", 600, "caller audio louder than this (RMS of s16 samples) counts as speech")
    barge_in_min_ms: Annotated[int, between(0, 2000)] = setting(
        "BARGE_IN_MIN_MS", 60, "milliseconds of continuous caller speech that stop a prompt")
    barge_in_mode: Annotated[str, one_of("auto", "vad", "energy")] = setting(
        "BARGE_IN_MODE", "auto", "what stops a prompt: vad (speech as webrtcvad hears it, STT_BARGE_IN_MS of it), "
        "energy (BARGE_IN_RMS for BARGE_IN_MIN_MS), auto (vad when STT_PROVIDER is set, else energy)")
    log_level: LogLevel = log_level_setting()
    log_format: LogFormat = log_format_setting()
    metrics_port: Port = setting("METRICS_PORT", 0, "Prometheus /metrics, /healthz, /readyz port; 0 = off")
    metrics_host: str = setting("METRICS_HOST", "127.0.0.1",
                                "address the metrics port listens on (loopback unless set; empty = BRIDGE_HOST)")
    workers: Annotated[int, between(1, 256)] = setting(
        "BRIDGE_WORKERS", 1, "processes sharing the AudioSocket port (SO_REUSEPORT), one core each; worker i "
        "serves metrics on METRICS_PORT + i")


PARTS: tuple[type[SettingsPart], ...] = (BridgeConfig, CacheConfig, TTSConfig, LLMConfig, STTConfig)


class Settings(EnvSettings):
    """Every setting of the bridge, read once at start-up (`Settings.load()`; see `voice.config` for the
    sources: flags, then the environment, then a `.env` file). Each component gets its part."""

    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    stt: STTConfig = Field(default_factory=STTConfig)


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for part_cls in PARTS:
        add_flags(parser, part_cls)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    overrides: dict[str, object] = {}
    for part_cls in PARTS:
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
