"""What one bridge process owns, built once at start-up: cache, dialogue, synthesis hub, metrics.

`BridgeRuntime.handle(call)` is the server's handler: it gives each call its own TTS chain (a
`TTSManager` over a `WebSocketConnectionManager`, as the TTS specification requires) and runs an
`Orchestrator` on it. `aclose()` waits for background cache writes, so nothing is lost on shutdown.

When the dialogue has `llm` items, the runtime holds the LLM `TextSource` (`LLM_BASE_URL` is required),
and each call also gets a `Conversation` memory and has its TTS WebSocket connected as the call starts,
so its first answer finds a hot socket; calls of a dialogue without `llm` items open no WebSocket.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from bridge.call import Call
from bridge.config import Settings
from bridge.conversation import Conversation
from bridge.dialogue import Dialogue, default_dialogue_path, load_dialogue
from bridge.config import require_llm_settings
from bridge.llm import OpenAICompatibleSource, TextSource
from bridge.ops.metrics import Metrics
from bridge.orchestrator import Orchestrator
from voice.cache import RedisCacheManager
from voice.domain.interfaces.cache import AbstractCache
from voice.fragment_memo import FragmentMemo
from voice.keys import profile_tag
from voice.synthesis import SynthesisHub
from voice.tts_manager.connection_manager import WebSocketConnectionManager
from voice.http import aclose_shared_client, shared_http_client
from voice.tts_manager.manager import TTSManager

log = structlog.get_logger(__name__)


def load_configured_dialogue(settings: Settings) -> Dialogue:
    """The dialogue of `DIALOGUE_FILE`, or the bundled sample. Raises DialogueError when it is invalid."""
    return load_dialogue(settings.bridge.dialogue_file or default_dialogue_path())


class _MetricsObserver:
    """Feeds synthesis events into the Prometheus metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_request(self) -> None:
        self.metrics.tts_requests.labels(api="http").inc()

    def on_first_audio(self, seconds: float) -> None:
        self.metrics.tts_first_byte.labels(api="http").observe(seconds)

    def on_error(self, error: BaseException) -> None:
        self.metrics.tts_errors.labels(error=type(error).__name__).inc()


class BridgeRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        dialogue: Dialogue | None = None,
        cache: AbstractCache | None = None,
        metrics: Metrics | None = None,
        llm: TextSource | None = None,
    ) -> None:
        self.settings = settings
        self.dialogue = dialogue or load_configured_dialogue(settings)
        if llm is None and self.dialogue.uses_llm:
            require_llm_settings(self.dialogue, settings.llm)  # ConfigError naming LLM_BASE_URL
            llm = OpenAICompatibleSource(settings.llm)
        self.llm = llm
        self.cache = cache or RedisCacheManager(settings.cache)
        self.fragments = FragmentMemo(self.cache, settings.cache.static_memo_ttl_s)
        """What calls read static fragments through: one shared copy per fragment, re-read every few seconds."""
        self.metrics = metrics or Metrics()
        self.tts_profile = profile_tag(settings.tts)
        self.hub = SynthesisHub(
            self.cache,
            output_format=settings.tts.output_format,
            ttl_seconds=None,  # the cache applies the TTS TTL to tts: keys
            observer=_MetricsObserver(self.metrics),
            target_dbfs=settings.cache.loudness_target,  # syntheses at the level fragments are stored at
        )

    async def start(self) -> None:
        await self.cache.connect()
        # Build the process's HTTP client now: it loads the CA bundle (40-70 ms of blocking work), which
        # the first synthesis would otherwise do on the event loop while calls are playing.
        shared_http_client()
        # Likewise its first request imports httpcore's async backend (anyio: 20-35 ms); import it now.
        import anyio

        await anyio.sleep(0)

    def new_tts(self) -> TTSManager:
        """A call's own TTS chain."""
        config = self.settings.tts
        return TTSManager(config, WebSocketConnectionManager(config))

    async def handle(self, call: Call) -> None:
        """The server's handler: play the dialogue on `call`."""
        started = time.monotonic()
        # lines the voice side logs on this call's behalf (syntheses, cache writes) carry its UUID too
        structlog.contextvars.bind_contextvars(call=str(call.uuid))
        tts = self.new_tts()
        conversation = None
        if self.llm is not None and self.dialogue.uses_llm:
            tts.connection_manager.prefetch()  # connect now: the first answer finds a hot socket
            conversation = self.new_conversation(call)
        orchestrator = Orchestrator(
            call,
            self.dialogue,
            cache=self.fragments,
            tts=tts,
            hub=self.hub,
            tts_profile=self.tts_profile,
            config=self.settings.bridge,
            metrics=self.metrics,
            llm=self.llm,
            conversation=conversation,
        )
        try:
            await orchestrator.run()
        except Exception:
            self.metrics.errors.labels(where="orchestrator").inc()
            call.log.exception("dialogue_failed")
            raise
        finally:
            await tts.aclose()
            if conversation is not None:
                await conversation.aclose()
            call.log.info("dialogue_ended", seconds=round(time.monotonic() - started, 3))

    def new_conversation(self, call: Call) -> Conversation:
        """A call's LLM memory; its session is the call's UUID (summaries are cached under it)."""
        assert self.llm is not None
        config = self.settings.llm
        return Conversation(str(call.uuid), self.llm, self.cache, memory_chars=config.llm_memory_chars,
                            summary_ttl_s=config.llm_summary_ttl_s, log=call.log)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Wait for cache writes in flight, then release Redis and the shared HTTP client."""
        await self.hub.drain(timeout)
        await self.cache.close()
        await aclose_shared_client()

    def describe(self) -> dict[str, Any]:
        return {"dialogue": self.dialogue.source, "nodes": len(self.dialogue.nodes), "tts_profile": self.tts_profile}
