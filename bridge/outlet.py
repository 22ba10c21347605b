"""A call's outbound queue and its media clock tick: what the clock does for one call every 20 ms.

`Outlet` is the C type `bridge._outlet.Outlet` when the extension was built (`pip install` compiles it
where a C compiler is present), else `PyOutlet`, this module's pure-Python reference with the same
behaviour (tests/unit/test_outlet.py runs every test against both). The C type exists because this tick
runs 50 times a second for every call: in Python each tick walks a dozen objects that are cold in the cache
by the next one, about 40 % of the bridge's CPU per call at 500 calls (docs/performance.md).

One tick (`clock_tick`), while the clock owns the socket (`fd` >= 0, the call is read on its tick):

1. one `read(2)`: nothing, or one plain 20 ms audio message while nobody listens (`count_plain`), is only
   counted; anything else, end of file and errors (as b"") included, goes to `on_read(data)`, and when that
   returns False the tick writes nothing (the caller is gone: Asterisk answers a frame sent after its FIN
   with a RST);
2. one frame written with one `sendmsg(2)`: a pending fade-out, else the next queued frame (a whole message,
   or the next 320-byte payload of a run, sent behind the 3-byte header straight from the shared list),
   else silence. What the kernel does not take whole goes to `on_blocked(rest)`, which hands the socket
   back to the event loop (from then on the transport buffers, and ends the call if the peer stops reading);
3. `on_level()` when a producer waits (`space_waiting`) and the queue is down to `low_water`, or someone
   waits for it to empty (`drain_waiting`) and it has.

With `fd` at -1 (not yet read on the tick, or a listening call) the frame goes through `write`, the
transport's. The counters (`frames_sent`, `speech_frames_sent`, `frames_received`, `spoke_at`) are the
call's.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.protocol import AUDIO_HEADER_320, FRAME_BYTES, SILENCE_FRAME

__all__ = ["NATIVE", "Outlet", "PyOutlet"]

_READ_BYTES = 4096
"""One tick's read: a 20 ms period normally holds one or two 323-byte messages."""
_MESSAGE = 3 + FRAME_BYTES


class _Run:
    """A list of payloads played in place (shared with the cache, never modified)."""

    __slots__ = ("frames", "next", "end")

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.next = 0
        self.end = len(frames)


class PyOutlet:
    """The reference implementation (see the module docstring); `bridge._outlet.Outlet` mirrors it."""

    __slots__ = ("fd", "count_plain", "ended", "space_waiting", "drain_waiting", "low_water", "pending",
                 "frames_sent", "speech_frames_sent", "frames_received", "spoke_at", "fade", "write",
                 "_on_read", "_on_level", "_on_blocked", "_queue")

    def __init__(self, on_read: Callable[[bytes], bool], on_level: Callable[[], object],
                 on_blocked: Callable[[bytes], object], low_water: int = 0) -> None:
        self.fd = -1
        self.count_plain = False
        self.ended = False
        self.space_waiting = False
        self.drain_waiting = False
        self.low_water = low_water
        self.pending = 0
        self.frames_sent = 0
        self.speech_frames_sent = 0
        self.frames_received = 0
        self.spoke_at = 0
        self.fade: bytes | None = None
        self.write: Callable[[bytes], object] | None = None
        self._on_read: Callable[[bytes], bool] | None = on_read
        self._on_level: Callable[[], object] | None = on_level
        self._on_blocked: Callable[[bytes], object] | None = on_blocked
        self._queue: collections.deque[bytes | _Run] = collections.deque()

    def clock_tick(self) -> None:
        if self.fd >= 0:
            try:
                data = os.read(self.fd, _READ_BYTES)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data is not None:
                if len(data) == _MESSAGE and self.count_plain and data.startswith(AUDIO_HEADER_320):
                    self.frames_received += 1
                elif not self._on_read(data):  # type: ignore[misc]
                    return
        if self.ended:
            return
        fade = self.fade
        if fade is not None:
            self.fade = None
            self.frames_sent += 1
            self._emit(fade)
            return
        queue = self._queue
        if not queue:
            self.frames_sent += 1
            self._emit(SILENCE_FRAME)
            return
        head = queue[0]
        if isinstance(head, bytes):
            queue.popleft()
            message = head
        else:
            run = head
            payload = run.frames[run.next]
            if payload.__class__ is not bytes or len(payload) != FRAME_BYTES:
                raise TypeError("a run's frames must be 320-byte bytes")
            message = AUDIO_HEADER_320 + payload
            run.next += 1
            if run.next == run.end:
                queue.popleft()
        self.pending -= 1
        self.speech_frames_sent += 1
        self.spoke_at = self.frames_sent
        self.frames_sent += 1
        self._emit(message)
        if not self.ended and self._on_level is not None and (
                (self.space_waiting and self.pending <= self.low_water)
                or (self.drain_waiting and not self.pending)):
            self._on_level()

    def _emit(self, message: bytes) -> None:
        if self.fd >= 0:
            try:
                sent = os.write(self.fd, message)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # the transport writes it and reports the error itself
            if sent < len(message):
                self._on_blocked(message[sent:])  # type: ignore[misc]
            return
        if self.write is None:
            raise RuntimeError("the outlet has no transport to write to")
        self.write(message)

    def push(self, message: bytes) -> None:
        if message.__class__ is not bytes:
            raise TypeError(f"a message is bytes, not {type(message).__name__}")
        self._queue.append(message)
        self.pending += 1

    def push_run(self, frames: list[bytes]) -> None:
        if frames.__class__ is not list:
            raise TypeError(f"a run is a list of frames, not {type(frames).__name__}")
        if frames:
            self._queue.append(_Run(frames))
            self.pending += len(frames)

    def clear(self) -> None:
        self._queue.clear()
        self.pending = 0

    def head_payload(self) -> bytes | None:
        if not self._queue:
            return None
        head = self._queue[0]
        if isinstance(head, bytes):
            return head[3:]
        run = head
        return run.frames[run.next] if run.next < len(run.frames) else None

    def close(self) -> None:
        self.ended = True
        self.fd = -1
        self.clear()
        self.fade = None
        self.write = None
        self._on_read = self._on_level = self._on_blocked = None


if TYPE_CHECKING:  # the C type mirrors the reference: type-check against the reference
    NATIVE: bool
    Outlet = PyOutlet
else:
    try:
        from bridge._outlet import Outlet
    except ImportError:  # not built (no C compiler at install time): the reference does the same, slower
        NATIVE = False
        Outlet = PyOutlet
    else:
        NATIVE = True
