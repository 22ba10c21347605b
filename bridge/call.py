"""One AudioSocket connection: inbound bytes -> call events; an outbound frame queue the media clock drains.

`Call` is the asyncio Protocol of one connection (protocol-level I/O: no stream reader per call, one
callback per read) and the object the dialogue works with (`bridge.interfaces.CallLine`). Its public API:

- identity: `uuid`, `peer`, `log` (bound with both), `sample_rate` (outbound audio, 8000 for kind 0x10);
- speaking: `await play(frame)`, `await play_frames(frames)`, `clear_audio()` (barge-in), `await drained()`;
- listening: `events` (a queue of `DtmfEvent` / `HangupEvent`), `on_audio(payload, sample_rate)` callback;
- life: `run(handler)` (the server starts the call's task group with its handler), `start_task(coro)`
  (more tasks in that group: cancelled at hang-up; a failure hangs the call up), `await hangup()`,
  `hung_up`, `ended`, `hangup_by`, `frames_sent`.

Only the media clock writes audio: the call's `bridge.outlet.Outlet` (the C tick where it was built) holds
the outbound queue and is the clock's member, one frame per tick: queued speech, else silence. The
queue is a few frames deep, so `play()` waits for the clock and a barge-in drops at most that much. A whole
list of frames (a cached fragment) is queued as one run the clock reads straight from the list: no copy,
and its producer is woken once, when the run is nearly played, instead of every couple of frames.
A call joins the clock with the first frame its handler queues (the phase is chosen then, so the first
word waits for no phase), or one period after its UUID if the handler has nothing to say by then. Speech
that starts after silence (the call's first words, or after `QUIET_FRAMES` of silence) is brought forward
(`MediaClock.expedite`) rather than waiting up to a period for the call's phase; a source that trickles
in frame by frame is not, so it can never make the call play faster than real time.
The socket is read for the whole call: by the event loop until the call is paced and its inbound format
judged, then by the clock just before it writes the call's frame (`read_on_arrival`: a listening call keeps
the event loop's reads); EOF, a reset or 0x00 end the call and cancel its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
import uuid as uuid_module
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import structlog

from bridge.inbound import InboundFormat, KeyRateLimit
from bridge.outlet import Outlet, PyOutlet
from bridge.protocol import (
    AUDIO_HEADER_320,
    FRAME_BYTES,
    HANGUP_MESSAGE,
    SAMPLE_RATE,
    SAMPLE_RATES,
    Decoder,
    IncompleteMessage,
    Kind,
    Message,
    ProtocolError,
)
from voice.audio import decode_ulaw

if TYPE_CHECKING:
    from bridge.clock import MediaClock
    from bridge.config import BridgeConfig

__all__ = ["Call", "CallEnded", "CallHost", "DtmfEvent", "HangupEvent"]

_log = structlog.get_logger(__name__)

CLOSE_TIMEOUT_S = 5.0
"""After a hang-up, how long a peer that does not read may keep the socket before it is aborted."""

JOIN_AFTER_S = FRAME_BYTES / (2 * SAMPLE_RATE)
"""A call with nothing to say joins the clock (silence) this long after its UUID: one 20 ms period."""

QUIET_FRAMES = 10
"""Frames of silence after which new speech counts as an utterance's start (expedited), not an underrun."""

_DECODE_SLICE = 8192
"""Bytes of one read decoded at a time (see `Call.data_received`)."""

EVENT_QUEUE_MAX = 64
"""Events a call may hold for its dialogue; more digits are dropped (a hang-up always gets in)."""

_TICK_READ_BYTES = 4096
"""One read on the clock's tick: a 20 ms period normally holds one or two 323-byte messages."""
_TICK_READS_MAX = 16
"""Reads a tick may make while the socket keeps filling them (a burst is drained, not left to grow)."""

_AUDIO_MESSAGE = 3 + FRAME_BYTES
"""One inbound 20 ms slin message: what Asterisk sends 50 times a second per call."""
_AUDIO_HEAD = AUDIO_HEADER_320


@dataclasses.dataclass(frozen=True, slots=True)
class DtmfEvent:
    digit: str


@dataclasses.dataclass(frozen=True, slots=True)
class HangupEvent:
    by: str
    """Who or what ended the call: caller (EOF), caller-0x00, caller-reset (RST/EPIPE), server (hangup()),
    shutdown, protocol-error, backpressure (the peer stopped reading), error (a call task failed),
    connection-error, dtmf-flood (digits far beyond a human's rate)."""


FADE_SAMPLES = 40
"""A cut prompt dies away over 5 ms at 8 kHz: long enough not to click, short enough to sound like a stop."""

_FADE = np.concatenate([1 - np.arange(FADE_SAMPLES, dtype=np.float32) / FADE_SAMPLES,
                        np.zeros(FRAME_BYTES // 2 - FADE_SAMPLES, dtype=np.float32)])


def _fade_out(payload: bytes) -> bytes:
    """A 320-byte slin frame ramped linearly from full level to zero over its first FADE_SAMPLES samples."""
    samples = np.frombuffer(bytes(payload).ljust(FRAME_BYTES, b"\x00")[:FRAME_BYTES], dtype="<i2")
    return np.rint(samples * _FADE).astype("<i2").tobytes()


def _pad(frame: bytes) -> bytes:
    """A short frame padded with zeros to 20 ms; b"" stays b"" (nothing to play)."""
    n = len(frame)
    if n > FRAME_BYTES:
        raise ValueError(f"a frame is at most {FRAME_BYTES} bytes (20 ms), got {n}")
    return bytes(frame) + bytes(FRAME_BYTES - n) if n else b""


class CallEnded(Exception):
    """The call has hung up: nothing more can be played on it."""


class CallHost:
    """What a call needs from its server (the server implements these; kept tiny on purpose)."""

    config: BridgeConfig
    clock: MediaClock

    def connection_opened(self, call: Call) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def admit_call(self, call: Call) -> bool:
        """Its UUID arrived: may it become a call (False: it is closed, e.g. the call cap is reached)?"""
        return True

    def call_ready(self, call: Call) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def call_ended(self, call: Call) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def connection_closed(self, call: Call) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Call(asyncio.Protocol):
    """One AudioSocket call. Created by the server for each connection; handed to the handler after the UUID."""

    # Slots, not a dict: the inbound path reads several of these per call for every message it handles, and
    # with hundreds of calls each call's state is cold in the cache by then; fixed offsets are fewer cache
    # lines and no hashing.
    __slots__ = (
        "_abort_timer", "_clock", "_decoder", "_depth", "_drain_waiter", "_ended", "_established", "_fast",
        "_format", "_group", "_held_inbound", "_host", "_join_timer", "_joined", "_keys", "_low_water",
        "_on_audio", "_out", "_outbound_limit", "_root",
        "_space_waiter", "_tasks", "_tick_reads", "_tick_reads_allowed", "_transport", "_uuid_timeout",
        "_uuid_timer", "_warned", "connected_at", "dtmf_dropped", "events", "hangup_by", "hung_up", "log", "peer",
        "started_at", "uuid",
    )

    sample_rate: int = SAMPLE_RATE

    def __init__(self, host: CallHost) -> None:
        config = host.config
        self._host = host
        self._clock = host.clock
        self.uuid: uuid_module.UUID | None = None
        self.peer = "?"
        self.log = _log
        self.events: asyncio.Queue[DtmfEvent | HangupEvent] = asyncio.Queue(EVENT_QUEUE_MAX)
        """Bounded: digits beyond the bound are dropped (`dtmf_dropped`); the hang-up always gets in."""
        self.dtmf_dropped = 0
        """Digits discarded by the rate limit or a full event queue (`voicebridge_dtmf_dropped_total`)."""
        self._keys = KeyRateLimit()
        self._on_audio: Callable[[bytes, int], None] | None = None
        self.hung_up = asyncio.Event()
        self.hangup_by: str | None = None
        self.connected_at = 0.0
        self.started_at: float | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder = Decoder(expect_uuid=True)
        self._established = False
        self._ended = False
        self._depth = config.queue_frames
        self._low_water = config.queue_frames // 2
        outlet = Outlet if config.native_tick else PyOutlet
        self._out = outlet(self._tick_read, self._on_level, self._write_blocked, self._low_water)
        """The outbound queue and the clock's tick (`bridge.outlet`): the clock's member for this call."""
        self._space_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._root: asyncio.Task[None] | None = None
        """The task holding the call's TaskGroup (`run`): it ends once every task of the call has ended."""
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._uuid_timer: asyncio.TimerHandle | None = None
        self._join_timer: asyncio.TimerHandle | None = None
        self._joined = False
        self._out.spoke_at = -QUIET_FRAMES  # the first words always count as an utterance's start
        self._abort_timer: asyncio.TimerHandle | None = None
        self._outbound_limit = config.outbound_limit_bytes
        self._uuid_timeout = config.first_message_timeout_s
        self._format = InboundFormat()
        """What 0x10 audio really is, judged from its first messages' byte rate (`bridge.inbound`)."""
        self._held_inbound: list[bytes] = []
        """Ambiguous 0x10 payloads (160 or 640 bytes) kept from listeners until their format is judged."""
        self._warned: set[str] = set()
        self._fast = False
        """Inbound fast path on: established, not ended, rate judged as slin 8 kHz, nothing buffered in the
        decoder. Whole 20 ms audio messages then skip the decoder (`data_received`)."""
        self._tick_reads_allowed = True
        """Whether the clock may read this call (see `read_on_arrival`)."""
        self._tick_reads = False
        """The clock reads and writes the socket itself at the call's tick (the outlet's `fd`); the transport is
        paused for reading meanwhile."""

    # --- public API -------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def queued_frames(self) -> int:
        return self._out.pending

    @property
    def frames_sent(self) -> int:
        return self._out.frames_sent

    @property
    def speech_frames_sent(self) -> int:
        return self._out.speech_frames_sent

    @property
    def frames_received(self) -> int:
        return self._out.frames_received

    @property
    def on_audio(self) -> Callable[[bytes, int], None] | None:
        """Called with each inbound audio payload (slin) and its sample rate; None: nobody listens, and the
        clock's tick only counts a plain 20 ms message."""
        return self._on_audio

    @on_audio.setter
    def on_audio(self, callback: Callable[[bytes, int], None] | None) -> None:
        self._on_audio = callback
        self._count_plain()

    def _count_plain(self) -> None:
        """Whether the clock's tick may only count one plain 20 ms message: on the fast path, nobody listening."""
        self._out.count_plain = self._fast and self._on_audio is None

    def read_on_arrival(self, on: bool) -> None:
        """Whether inbound audio must reach `on_audio` the moment it arrives (a recognizer's endpointing waits
        for it: every millisecond of a turn counts) or may be read at the call's clock tick, 0-20 ms later.

        Reading on the tick is the default once the call is paced and its inbound audio judged slin 8 kHz:
        the clock, just before writing the call's frame, reads what the caller sent in the last period (one
        `read(2)` of one or two messages), so the event loop never polls the socket or runs a read callback
        per message; about a quarter of the bridge's CPU per call (docs/performance.md). A digit or the
        start of a barge-in is seen up to one period later. Anything unusual on the socket (end of file, an
        error) hands reading back to the event loop, which ends the call the usual way.
        """
        self._tick_reads_allowed = not on
        if on:
            self._stop_tick_reads()
        else:
            self._start_tick_reads()

    async def play(self, frame: bytes) -> None:
        """Queue one 20 ms slin frame; a short frame (the last of a prompt) is padded with zeros.

        Waits while the queue is full, so a producer runs at most a few frames ahead of the clock.
        Raises CallEnded once the call has hung up.
        """
        await self.play_frames((frame,))

    async def play_frames(self, frames: Iterable[bytes]) -> int:
        """Queue frames in order as the clock makes room; returns how many were queued.

        The producer is woken when the queue is down to half its depth, so it refills several frames per
        wake-up while the clock still has 40 ms or more in hand. A list of whole 320-byte frames longer than
        the queue is played as one run (see the module docstring); it returns, like the frame-by-frame path,
        once no more than the queue's depth of it is left to play. The list is read, never copied: it must
        not be changed while it plays (shared cached fragments never are).
        """
        if type(frames) is list and len(frames) > self._depth and all(len(f) == FRAME_BYTES for f in frames):
            return await self._play_run(frames)
        out = self._out
        depth = self._depth
        header = AUDIO_HEADER_320
        count = 0
        for frame in frames:
            if self._ended:
                raise CallEnded(f"call {self.uuid} has hung up")
            if len(frame) != FRAME_BYTES:
                frame = _pad(frame)
                if not frame:
                    continue
            while out.pending >= depth:
                await self._space()
            if not out.pending:
                self._starting()
            out.push(header + frame)
            count += 1
        return count

    async def _play_run(self, frames: list[bytes]) -> int:
        if self._ended:
            raise CallEnded(f"call {self.uuid} has hung up")
        out = self._out
        while out.pending >= self._depth:  # behind no more than a full queue, as a single frame would be
            await self._space()
        if not out.pending:
            self._starting()
        out.push_run(frames)
        while out.pending > self._depth:
            await self._space()
        return len(frames)

    async def _space(self) -> None:
        """Until the clock has taken the queue down to its low-water mark (or the call ended: CallEnded)."""
        waiter = self._space_waiter
        if waiter is None:
            waiter = self._space_waiter = asyncio.get_running_loop().create_future()
            self._out.space_waiting = True
        await waiter
        if self._ended:
            raise CallEnded(f"call {self.uuid} has hung up")

    def _starting(self) -> None:
        """Audio is queued while nothing was: the first frame ever, an utterance's start, or an underrun."""
        if not self._joined:
            self._join_clock()
        elif self._out.frames_sent - self._out.spoke_at >= QUIET_FRAMES:
            self._clock.expedite(self._out)  # out at the soonest phase pacing allows

    def clear_audio(self) -> int:
        """Barge-in: drop every queued frame (the clock goes on with silence); returns how many were dropped.

        A prompt cut mid-waveform clicks (a jump of thousands from the last sample to silence). So when speech
        was playing, the frame that would have come next is sent once more as a fade-out (its first
        `FADE_SAMPLES` ramped down to zero, then silence) instead of being dropped: the waveform goes on where
        it was and dies away in a few ms.
        """
        out = self._out
        dropped = out.pending
        if dropped and out.spoke_at == out.frames_sent - 1:  # speech went out last tick: the cut is audible
            payload = out.head_payload()
            if payload is not None:
                out.fade = AUDIO_HEADER_320 + _fade_out(payload)
                dropped -= 1
        out.clear()
        self._wake_space()
        self._wake_drain()
        return dropped

    async def drained(self) -> None:
        """Return once every queued frame has been written. Raises CallEnded if the call hangs up first."""
        while self._out.pending:
            await self._drain()
        if self._ended:
            raise CallEnded(f"call {self.uuid} has hung up")

    def run(self, handler: Callable[[Call], Awaitable[None]]) -> asyncio.Task[None]:
        """Start the call's task tree: a root task holding an `asyncio.TaskGroup`, `handler(call)` its first
        task. Everything the call does runs in that group, so a hang-up (which cancels the group's tasks)
        ends the whole tree, and the root (returned) ends only when the last of them has."""
        if self._root is not None:
            raise RuntimeError(f"call {self.uuid} is already running")

        async def handle() -> None:
            await handler(self)

        async def tree() -> None:
            if self._ended:  # hung up before the tree could start: nothing to run
                return
            async with asyncio.TaskGroup() as group:
                self._group = group
                self.start_task(handle(), name="handler")
            self._group = None

        self._root = root = asyncio.get_running_loop().create_task(tree(), name=f"call:{self.uuid}")
        root.add_done_callback(self._root_done)
        return root

    def start_task(self, coro: Coroutine[Any, Any, Any], *, name: str = "task") -> asyncio.Task[Any]:
        """Run `coro` as a task of the call's group: hang-up cancels it; if it fails, the call is hung up.

        Called from the call's own tasks (the group exists from the handler's start until it has ended).
        """
        if self._ended:
            coro.close()
            raise CallEnded(f"call {self.uuid} has hung up")
        if self._group is None:
            coro.close()
            raise RuntimeError(f"call {self.uuid} has no running task group: start_task is for the call's own tasks")
        task = self._group.create_task(self._guarded(coro, name), name=f"call:{self.uuid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A call task's body: a failure hangs the call up (and so cancels its siblings) instead of failing
        the group; `CallEnded` is how work stops when the call has gone, not a failure."""
        try:
            await coro
        except CallEnded:
            pass
        except Exception as exc:
            self.log.error("call_task_failed", task=name, exc_info=exc)
            self._end("error", send_hangup=True)

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The call's live tasks: its root (until the whole tree has ended) and the group's tasks."""
        root = () if self._root is None or self._root.done() else (self._root,)
        return frozenset((*root, *self._tasks))

    async def hangup(self, reason: str = "server") -> None:
        """End the call now from the server side: write 00 00 00, close, cancel the call's other tasks.

        Audio still queued is dropped; to finish a prompt first, `await drained()` before hanging up.
        """
        self._end(reason, send_hangup=True)

    def __repr__(self) -> str:
        return f"<Call {self.uuid} from {self.peer}{' ended' if self._ended else ''}>"

    # --- the media clock's side: the outlet ticks; these are its callbacks -------------------------------

    def _tick_read(self, data: bytes) -> bool:
        """What the clock's read on the tick found, when it was not one plain message (`Outlet.clock_tick`):
        it goes through `data_received`, and a full read is followed by more (a burst is drained now rather
        than left to grow). False when the connection ended (b"": end of file or an error): the event loop
        reads that again and ends the call the usual way, sending our FIN, and nothing is written meanwhile."""
        for _ in range(_TICK_READS_MAX):
            if not data:
                self._stop_tick_reads()
                return False
            self.data_received(data)
            if len(data) < _TICK_READ_BYTES or not self._tick_reads:
                return True
            try:
                data = os.read(self._out.fd, _TICK_READ_BYTES)
            except BlockingIOError:
                return True
            except OSError:
                self._stop_tick_reads()
                return False
        return True

    def _write_blocked(self, rest: bytes) -> None:
        """The kernel did not take a whole frame on the tick: the event loop takes the socket back, and its
        transport buffers the rest (and ends the call if the peer has stopped reading: `pause_writing`)."""
        self._stop_tick_reads()
        transport = self._transport
        if transport is not None:
            transport.write(rest)

    def _on_level(self) -> None:
        """The clock took the queue down to the low-water mark, or emptied it: wake who waits for that."""
        out = self._out
        if out.space_waiting and out.pending <= self._low_water:
            self._wake_space()
        if out.drain_waiting and not out.pending:
            self._wake_drain()

    def _start_tick_reads(self) -> None:
        """The clock reads and writes the socket itself from now on: the call is paced, its inbound is judged,
        nobody needs it sooner, and the transport holds nothing unsent (its bytes must go out first)."""
        if self._tick_reads or not (self._tick_reads_allowed and self._fast and self._joined) or self._ended:
            return
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if (transport is None or sock is None or transport.is_closing()
                or transport.get_write_buffer_size()):
            return
        transport.pause_reading()
        self._out.fd = sock.fileno()
        self._tick_reads = True

    def _stop_tick_reads(self) -> None:
        """The event loop reads and writes the socket again (a listener needs every frame at once, the socket
        ended, or the kernel's buffer is full)."""
        if not self._tick_reads:
            return
        self._tick_reads = False
        self._out.fd = -1
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport, by duck typing: uvloop's transports are not subclasses of asyncio.Transport
        self._transport = tcp = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        self.log = _log.bind(peer=self.peer)
        loop = asyncio.get_running_loop()
        self.connected_at = loop.time()
        if not self._host.connection_opened(self):
            self._ended = True
            self.hangup_by = "rejected"
            tcp.abort()
            return
        # The peer must not make us buffer without bound: past the limit pause_writing() drops the call.
        # The kernel's send buffer is capped likewise (left alone it grows to megabytes, i.e. minutes of
        # audio, before a stuck peer shows in user space); audio needs 16 KB/s, so this costs nothing.
        self._out.write = tcp.write
        tcp.set_write_buffer_limits(high=self._outbound_limit)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not every platform lets us
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._outbound_limit)
        self._uuid_timer = loop.call_later(self._uuid_timeout, self._uuid_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._fast:
            # The hot path, 50 times a second per call: whole 20 ms slin messages and nothing buffered.
            # No decoder, no list, no Message: count the frames, and hand the payloads over only when a
            # listener is armed. Anything else (DTMF, a cut message, other kinds) takes the general path.
            n = len(data)
            if n == _AUDIO_MESSAGE and data.startswith(_AUDIO_HEAD):
                self._out.frames_received += 1
                callback = self._on_audio
                if callback is not None:
                    self._listen(callback, data[3:])
                return
            if n % _AUDIO_MESSAGE == 0 and self._all_audio(data, n):
                self._out.frames_received += n // _AUDIO_MESSAGE
                callback = self._on_audio
                if callback is not None:
                    for i in range(3, n, _AUDIO_MESSAGE):
                        if self._listen(callback, data[i:i + FRAME_BYTES]) or not self._fast:
                            break  # the listener failed, or the call ended
                return
        elif self._ended:
            return
        if len(data) > _DECODE_SLICE:
            # A big read (up to 256 KB from uvloop: 65,000 DTMF messages) is decoded a slice at a time, so a
            # call hung up mid-read (a flood, a protocol error) costs the loop one slice, not the whole read.
            for start in range(0, len(data), _DECODE_SLICE):
                self._receive(data[start:start + _DECODE_SLICE])
                if self._ended:
                    return
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self._handle(exc.messages)  # what came before the fault is real
            self._protocol_error(exc)
            return
        self._handle(messages)
        if self._ended or self._decoder.buffered:  # a message cut across reads: its rest needs the decoder
            self._fast = False
            self._count_plain()
        elif (not self._fast and self._established and not self._format.judging
              and self._format.verdict is None):
            self._fast_path_on()

    @staticmethod
    def _all_audio(data: bytes, n: int) -> bool:
        """Whether `data` (n bytes, a multiple of one message) is only whole 20 ms slin messages."""
        head = _AUDIO_HEAD
        for i in range(0, n, _AUDIO_MESSAGE):  # noqa: SIM110 - per message: a loop beats all() of a generator
            if not data.startswith(head, i):
                return False
        return True

    def _listen(self, callback: Callable[[bytes, int], None], payload: bytes) -> bool:
        """One inbound frame to the listener; a failing listener is disabled (True: stop delivering)."""
        try:
            callback(payload, 8000)
        except Exception:
            self.log.exception("on_audio callback failed; disabled for this call")
            self.on_audio = None
            return True
        return False

    def _fast_path_on(self) -> None:
        """The inbound format is judged slin 8 kHz: take the fast path, and read on the tick once paced.

        Reading on the tick waits for that judgement: the first frames' arrival times are what judge it.
        """
        self._fast = True
        self._count_plain()
        self._start_tick_reads()

    def _handle(self, messages: list[Message]) -> None:
        for kind, payload in messages:
            if kind == Kind.AUDIO and not self._format.judging and len(payload) == FRAME_BYTES:
                # the hot path: 50 times a second per call
                self._out.frames_received += 1
                callback = self._on_audio
                if callback is not None:
                    try:
                        callback(payload, SAMPLE_RATE)
                    except Exception:
                        self.log.exception("on_audio_failed")
                        self.on_audio = None
            elif kind in SAMPLE_RATES:
                self._on_inbound_audio(kind, payload)
            elif kind == Kind.DTMF:
                self._on_dtmf(payload)
            elif kind == Kind.HANGUP:
                self._end("caller-0x00", send_hangup=False)
                return
            elif kind == Kind.UUID:
                if self._established:
                    self._warn_once("uuid-again", "second_uuid_ignored")
                else:
                    self._on_uuid(uuid_module.UUID(bytes=payload))
            else:
                self._warn_once(f"kind-{kind}", "unknown_kind_skipped",
                                kind=f"0x{kind:02x}", length=len(payload), payload=payload[:16].hex())
            if self._ended:
                return

    def eof_received(self) -> bool:
        try:
            self._decoder.eof()
        except IncompleteMessage as exc:
            self.log.warning("closed_mid_message", error=str(exc))
            self._end("protocol-error", send_hangup=False)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        if not self._ended:
            if exc is None:
                by = "caller"
            elif isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                by = "caller-reset"  # the caller closed with our audio unread: Linux answers with a RST
            else:
                by = "connection-error"
                self.log.warning("connection_failed", error=repr(exc))
            self._end(by, send_hangup=False)
        self._transport = None  # the transport and its protocol no longer hold each other
        self._host.connection_closed(self)

    def pause_writing(self) -> None:
        # The transport's buffer passed outbound_limit_bytes: the peer stopped reading.
        buffered = self._transport.get_write_buffer_size() if self._transport else 0
        self.log.warning("peer_not_reading", buffered_bytes=buffered,
                         limit_bytes=self._outbound_limit)
        self._end("backpressure", send_hangup=False, abort=True)

    def resume_writing(self) -> None:
        pass

    # --- inside -----------------------------------------------------------------------------------------

    def _on_uuid(self, call_uuid: uuid_module.UUID) -> None:
        if self._uuid_timer is not None:
            self._uuid_timer.cancel()
            self._uuid_timer = None
        if not self._host.admit_call(self):
            self._end("call-limit", send_hangup=True)
            return
        self.uuid = call_uuid
        self._established = True
        self.started_at = asyncio.get_running_loop().time()
        self.log = self.log.bind(call=str(call_uuid))
        self.log.info("call_started")
        self._join_timer = asyncio.get_running_loop().call_later(JOIN_AFTER_S, self._join_clock)
        self._host.call_ready(self)

    def _join_clock(self) -> None:
        """Start being paced: with the first queued frame, or after one period of nothing to say."""
        if self._join_timer is not None:
            self._join_timer.cancel()
            self._join_timer = None
        if not self._joined and not self._ended:
            self._joined = True
            self._clock.add(self._out)
            self._start_tick_reads()

    def _on_dtmf(self, payload: bytes) -> None:
        """One digit (the decoder checked it): past the rate limit or a full queue it is dropped and counted,
        with one warning per call; a call that keeps flooding is hung up. Dropped digits cost no log line."""
        verdict = self._keys.offer(time.monotonic())
        if verdict == KeyRateLimit.ACCEPT and not self.events.full():
            digit = payload.decode("ascii")
            self.log.info("dtmf", digit=digit)
            self.events.put_nowait(DtmfEvent(digit))
            return
        self.dtmf_dropped += 1
        if verdict == KeyRateLimit.FLOOD:
            self.log.warning("dtmf_flood_hangup", dropped=self.dtmf_dropped, rate_per_s=self._keys.rate_per_s)
            self._end("dtmf-flood", send_hangup=True)
            return
        self._warn_once("dtmf-dropped", "dtmf_rate_limited", rate_per_s=self._keys.rate_per_s,
                        burst=self._keys.burst, queued=self.events.qsize(),
                        reason="rate" if verdict == KeyRateLimit.DROP else "queue-full")

    def _on_inbound_audio(self, kind: int, payload: bytes) -> None:
        n = len(payload)
        if not n or n & 1:
            self._warn_once("odd-audio", "odd_audio_length", kind=f"0x{kind:02x}", length=n)
            if n < 2:
                return
            payload = payload[:-1]
        self._out.frames_received += 1
        judge = self._format
        if judge.judging:
            if judge.offer(kind, n, time.monotonic()):
                self._format_judged(n)
            if kind == Kind.AUDIO and n != FRAME_BYTES:
                # 160 bytes may be 20 ms of μ-law or 10 ms of slin; 640 may be slin16. Read as slin, μ-law
                # line noise is loud noise and fires a barge-in: listeners get nothing until it is judged.
                self._held_inbound.append(payload)
                if judge.judging:
                    return
                held, self._held_inbound = self._held_inbound, []
                for piece in held:
                    self._deliver(kind, piece)
                return
        self._deliver(kind, payload)

    def _deliver(self, kind: int, payload: bytes) -> None:
        """Inbound audio to the listener, as slin: μ-law mislabelled 0x10 decoded, slin16 given its rate."""
        rate = SAMPLE_RATES[kind]
        verdict = self._format.verdict
        if kind == Kind.AUDIO and verdict is not None:
            if verdict == "ulaw":
                payload = decode_ulaw(payload)
            else:
                rate = 16000
        callback = self._on_audio
        if callback is not None:
            try:
                callback(payload, rate)
            except Exception:
                self.log.exception("on_audio_failed")
                self.on_audio = None

    def _format_judged(self, n: int) -> None:
        """The inbound format is judged: a mislabelled one is read as what it is, with a warning that says
        how to fix the dialplan."""
        judge = self._format
        rate = round(judge.bytes_per_s or 0)
        if judge.verdict == "ulaw":
            self.log.warning(
                "inbound_looks_ulaw", frame_bytes=n, bytes_per_s=rate,
                hint="8-bit mu-law labelled as slin (kind 0x10); with Dial(AudioSocket/host:port/uuid) add "
                     "c(slin), e.g. Dial(AudioSocket/host:port/${UUID()}/c(slin))")
        elif judge.verdict == "slin16":
            self.log.warning(
                "inbound_looks_slin16", frame_bytes=n, bytes_per_s=rate,
                hint="twice slin 8 kHz: slin16 labelled 0x10 (ARI externalMedia format=slin16 on Asterisk "
                     "before 20.17)")

    def _uuid_timed_out(self) -> None:
        self._uuid_timer = None
        if not self._established and not self._ended:
            self.log.warning("uuid_timeout", timeout_s=self._uuid_timeout,
                             received_bytes=self._decoder.buffered)
            self._end("no-uuid", send_hangup=False)

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.log.warning("protocol_error", error=str(exc), error_type=type(exc).__name__)
        self._end("protocol-error", send_hangup=False)

    def _warn_once(self, key: str, event: str, **kw: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(event, **kw)

    async def _drain(self) -> None:
        """Until the clock has emptied the queue (or the call ended: CallEnded)."""
        if self._ended:
            raise CallEnded(f"call {self.uuid} has hung up")
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
            self._out.drain_waiting = True
        await waiter
        if self._ended:
            raise CallEnded(f"call {self.uuid} has hung up")

    def _wake_space(self) -> None:
        self._out.space_waiting = False
        waiter, self._space_waiter = self._space_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain(self) -> None:
        self._out.drain_waiting = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail_waiters(self) -> None:
        """Wake whoever waits for space or drain; they see `_ended` and raise CallEnded themselves.

        Not `set_exception`: an exception stored on the future is raised with a traceback whose frames
        hold that future in a local, a reference cycle per hung-up call that only a full collection frees.
        """
        self._wake_space()
        self._wake_drain()

    def _root_done(self, root: asyncio.Task[None]) -> None:
        """The tree has ended. Its tasks never fail it (`_guarded`), so an error here is a bug: report it."""
        if not root.cancelled() and root.exception() is not None:
            self.log.error("call_task_group_failed", exc_info=root.exception())
            self._end("error", send_hangup=True)

    def _end(self, by: str, *, send_hangup: bool, abort: bool = False) -> None:
        """The one way a call ends, whoever ends it. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._fast = False
        self._tick_reads = False  # the transport is closed below: nothing reads it any more
        out = self._out
        out.close()  # nothing more is written or read on the tick; its counters stay
        self.hangup_by = by
        if self._uuid_timer is not None:
            self._uuid_timer.cancel()
            self._uuid_timer = None
        if self._join_timer is not None:
            self._join_timer.cancel()
            self._join_timer = None
        self._clock.discard(out)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                if send_hangup:
                    transport.write(HANGUP_MESSAGE)
                transport.close()
                if transport.get_write_buffer_size():
                    self._abort_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)
        self._fail_waiters()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.hung_up.set()
        if self._established:
            self._host.call_ended(self)
            if self.events.full():  # the hang-up must reach the dialogue: it displaces the oldest digit
                self.events.get_nowait()
            self.events.put_nowait(HangupEvent(by))
            duration = asyncio.get_running_loop().time() - (self.started_at or self.connected_at)
            self.log.info("call_ended", by=by, duration_s=round(duration, 3), frames_sent=self.frames_sent,
                          speech_frames_sent=self.speech_frames_sent, frames_received=self.frames_received)
