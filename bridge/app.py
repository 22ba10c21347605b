"""The composition root: what one bridge process owns, and what each call is given.

Start-up builds, from the settings, one of each shared part (`BridgeApp`): the Redis cache, the fragment
memo calls read static audio through, the synthesis hub (one synthesis per text, shared by every caller),
the metrics, and the LLM `TextSource` when the dialogue has `llm` items (`LLM_BASE_URL` is then required).
`serve()` adds the AudioSocket server and the health/metrics endpoint around it.

Each call (`BridgeApp.handle`, the server's handler) gets its own TTS chain (a `TTSManager` over a
`WebSocketConnectionManager`, as the TTS specification requires), a `ConversationManager` when the
dialogue has `llm` items (and its TTS WebSocket connected as the call starts, so the first answer finds a
hot socket), and its rooms: `DialogueRunner` -> `Playlist` / `Answers` -> `Speaker` -> the call's queue.
When the dialogue listens and `STT_PROVIDER` is set, the call also gets a speech recognizer
(`bridge.listening.Listener`), read by a task of the call's group and closed at hang-up like the TTS chain;
`BARGE_IN_MODE` picks the barge-in detector (VAD or energy) fed with the same inbound frames.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.answers import Answers
from bridge.barge_in import BargeInDetector, SpeechDetector, VadBargeIn, barge_in_mode
from bridge.call import Call, CallEnded
from bridge.config import Settings, require_llm_settings
from bridge.dialogue import Dialogue, default_dialogue_path, load_dialogue
from bridge.dialogue_runner import DialogueRunner, PlaybackStep
from bridge.listening import Inbound, Listener, ListeningStep, TurnLatency
from bridge.ops.gc import FullCollectionPolicy
from bridge.ops.logs import register_settings_secrets, settings_for_log
from bridge.ops.metrics import Metrics
from bridge.playlist import Playlist, Synthesizer
from bridge.preflight import preflight_at_start
from bridge.server import AudioSocketServer, Handler, serve_until_signalled
from bridge.speaker import Speaker
from bridge.variables import CallVariables
from voice.audio import Loudness
from voice.cache import RedisCacheManager
from voice.fragment_memo import FragmentMemo
from voice.http import aclose_shared_client, shared_http_client
from voice.keys import profile_tag
from voice.llm import ConversationManager, OpenAICompatibleSource, TextSource
from voice.stt import create_recognizer
from voice.stt.base import voice_activity_detector
from voice.stt.vad import FrameClassifier
from voice.synthesis import SynthesisHub
from voice.tasks import cancel_and_wait
from voice.tts_manager.connection_manager import WebSocketConnectionManager
from voice.tts_manager.manager import TTSManager

__all__ = ["BridgeApp", "load_configured_dialogue", "serve"]

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


class BridgeApp:
    """The process's shared parts, and `handle(call)`: the dialogue on one call."""

    def __init__(
        self,
        settings: Settings,
        *,
        dialogue: Dialogue | None = None,
        cache: RedisCacheManager | None = None,  # Redis's: the start-up check and /readyz ping it
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
        target = settings.cache.loudness_target
        self.loudness = Loudness(target) if target is not None else None
        """LLM answers are brought to the same level as they stream."""

    async def start(self) -> None:
        await self.cache.connect()
        # Build the process's HTTP client now: it loads the CA bundle (40-70 ms of blocking work), which
        # the first synthesis would otherwise do on the event loop while calls are playing.
        shared_http_client()
        # Likewise its first request imports httpcore's async backend (anyio: 20-35 ms); import it now.
        import anyio

        await anyio.lowlevel.checkpoint()

    def new_tts(self) -> TTSManager:
        """A call's own TTS chain."""
        config = self.settings.tts
        return TTSManager(config, WebSocketConnectionManager(config))

    def new_conversation(self, call: Call) -> ConversationManager:
        """A call's LLM memory; its session is the call's UUID (summaries are cached under it)."""
        assert self.llm is not None
        config = self.settings.llm
        return ConversationManager(str(call.uuid), self.llm, self.cache, memory_chars=config.llm_memory_chars,
                                   summary_ttl_s=config.llm_summary_ttl_s, log=call.log)

    def new_listener(self, call: Call) -> Listener:
        """A call's ears: a recognizer when `STT_PROVIDER` is set (else a listener that hears nothing, and
        listening nodes take digits only). Not started: `handle` runs it in the call's group."""
        stt = self.settings.stt
        recognizer = create_recognizer(stt, self.settings.tts, "pcm_8000") if stt.enabled else None
        return Listener(recognizer, metrics=self.metrics, log=call.log)

    def new_detector(self) -> BargeInDetector:
        config = self.settings.bridge
        if barge_in_mode(config.barge_in_mode, self.settings.stt) == "vad":
            return VadBargeIn.from_config(self.settings.stt)
        return SpeechDetector(config.barge_in_rms, config.barge_in_min_ms)

    def new_runner(self, call: Call, tts: TTSManager, conversation: ConversationManager | None,
                   listener: Listener | None = None) -> DialogueRunner:
        """The rooms of one call, wired together."""
        config = self.settings.bridge
        speaker = Speaker(call, self.fragments, config.filler_names, self.metrics, call.log)
        answers = Answers(speaker, tts, self.llm, conversation, filler_after_s=config.filler_after_s,
                          metrics=self.metrics, log=call.log, loudness=self.loudness)
        variables = CallVariables(str(call.uuid), self.dialogue.vars, self.fragments, call.log)
        detector = self.new_detector()
        # one VAD pass a frame, shared by the barge-in detector and the recognizer's endpointer (Inbound)
        vad: FrameClassifier | None = None
        if isinstance(detector, VadBargeIn):
            vad = detector.vad
        elif listener is not None and listener.recognizer is not None:
            vad = voice_activity_detector(self.settings.stt)
        inbound = Inbound([detector.feed, listener.feed] if listener is not None else [detector.feed], vad=vad)
        on_close = None
        if vad is None and isinstance(detector, SpeechDetector) and (listener is None or listener.recognizer is None):
            # only the energy detector looks at the caller's audio, and only while armed: until then the
            # call hands no frame over (its inbound fast path just counts them)
            energy = detector

            def hear(armed: bool) -> None:
                call.on_audio = inbound if armed else None

            def unhook() -> None:  # the detector -> hear -> inbound -> the detector's feed: a cycle
                energy.on_armed = None

            energy.on_armed = hear
            on_close = unhook
            call.on_audio = None
        else:
            call.on_audio = inbound
        playlist = Playlist(call, speaker, answers, fragments=self.fragments,
                            synthesis=Synthesizer(self.hub, tts, self.tts_profile), variables=variables,
                            detector=detector, filler_after_s=config.filler_after_s, metrics=self.metrics)
        steps: list[PlaybackStep | ListeningStep] = [PlaybackStep(playlist)]
        if listener is not None:
            turns = TurnLatency(speaker, self.metrics, asyncio.get_running_loop().time)
            steps.append(ListeningStep(call, listener, variables,
                                       final_timeout_s=self.settings.stt.stt_request_timeout_s,
                                       metrics=self.metrics, turns=turns))
        return DialogueRunner(call, self.dialogue, steps, variables=variables, speaker=speaker,
                              conversation=conversation, on_close=on_close)

    async def handle(self, call: Call) -> None:
        """The server's handler: play the dialogue on `call`."""
        started = time.monotonic()
        # lines the voice side logs on this call's behalf (syntheses, cache writes) carry the call's UUID and
        # peer like the call's own lines (this task's context: the call's other tasks copy it from here)
        structlog.contextvars.bind_contextvars(call=str(call.uuid), peer=call.peer)
        tts = self.new_tts()
        conversation = None
        if self.llm is not None and self.dialogue.uses_llm:
            tts.connection_manager.prefetch()  # connect now: the first answer finds a hot socket
            conversation = self.new_conversation(call)
        listener = self.new_listener(call) if self.dialogue.listens else None
        if listener is not None and listener.recognizer is not None:
            call.read_on_arrival(True)  # the recognizer's endpointing wants each frame as it arrives
        runner: DialogueRunner | None = None
        try:
            if listener is not None:
                listener.start(lambda run: call.start_task(run, name="stt"))
            runner = self.new_runner(call, tts, conversation, listener)
            await runner.run()
        except CallEnded:
            raise  # the call hung up while the dialogue was speaking: its end, not a failure
        except Exception:
            self.metrics.errors.labels(where="orchestrator").inc()
            call.log.exception("dialogue_failed")
            raise
        finally:
            if runner is not None:
                runner.close()
            if listener is not None:
                await listener.aclose()
            await tts.aclose()
            if conversation is not None:
                await conversation.aclose()
            call.log.info("dialogue_ended", seconds=round(time.monotonic() - started, 3))

    async def aclose(self, timeout: float = 10.0) -> None:
        """Wait for cache writes in flight, then release Redis and the shared HTTP client."""
        await self.hub.drain(timeout)
        await self.cache.close()
        await aclose_shared_client()

    def describe(self) -> dict[str, Any]:
        return {"dialogue": self.dialogue.source, "nodes": len(self.dialogue.nodes), "tts_profile": self.tts_profile}


async def serve(settings: Settings, handler: Handler | None = None, *,
                ready: Callable[[AudioSocketServer], None] | None = None, dialogue: Dialogue | None = None,
                metrics_sockets: list[socket.socket] | None = None) -> int:
    """Serve until SIGTERM/SIGINT. Without a handler, every call plays `dialogue` (default: the configured one).

    With `METRICS_PORT` set, `/metrics`, `/healthz` and `/readyz` are served (`bridge.ops.health`) from before
    the first call until the last one has ended: `/readyz` answers 503 from the moment a stop signal
    arrives, while calls finish their grace period. `metrics_sockets`: the metrics port, already bound (the
    supervisor of `serve --workers N` binds each worker's).

    Every port is bound before any is started, and before the bridge says it is ready (the `listening` line,
    `ready`, /readyz): a port that cannot be had raises `ListenError` naming its settings, and nothing of the
    bridge was ever reachable.
    """
    register_settings_secrets(settings)
    log.info("settings", **settings_for_log(settings))
    metrics = Metrics()
    app = None
    preflight: asyncio.Task[object] | None = None
    if handler is None:
        app = BridgeApp(settings, dialogue=dialogue, metrics=metrics)
        await app.start()
        handler = app.handle
        log.info("dialogue", **app.describe())
    server = AudioSocketServer(settings.bridge, handler, metrics=metrics)
    health = None
    if settings.bridge.metrics_port:
        from bridge.ops.health import HealthServer

        health = HealthServer(server, metrics, settings, cache=app.cache if app is not None else None,
                              sockets=metrics_sockets)
    _freeze_startup_objects()
    server.gc_pauses.install()
    server.full_collections = FullCollectionPolicy()
    try:
        await server.bind()
        if health is not None:
            health.bind()
        if app is not None:
            # the same checks as `voice-bridge check`, logged as warnings: serve starts whatever they find
            preflight = asyncio.create_task(preflight_at_start(settings, app.dialogue, cache=app.cache))
        await server.start()
        try:
            if health is not None:
                await health.start()
            await serve_until_signalled(server, settings.bridge, ready)
        finally:
            if server.accepting:  # failed before the orderly stop
                await server.stop(0)
    finally:
        server.gc_pauses.remove()
        server.unbind()
        if health is not None:
            await health.stop()
        await cancel_and_wait(preflight)
        if app is not None:
            await app.aclose()
    return 0


def _freeze_startup_objects() -> None:
    """Keep the garbage collector's full passes away from the calls' audio.

    A full pass walks every tracked object with the event loop stopped. What start-up built (modules,
    settings, the dialogue, clients: most of the heap, alive for good) is frozen out of those passes
    (`gc.freeze`), and a full pass is considered a hundred times less often (the third threshold: after
    1000 middle-generation passes instead of 10; young cyclic garbage is still collected as before). Left as they
    were, passes of 20-50 ms came every time the heap grew by a quarter, i.e. several times while a
    thousand calls start, and each one is a gap every call hears (docs/benchmarks.md, "The whole call path").
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)
