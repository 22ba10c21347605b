"""The outlet (a call's outbound queue and its clock tick) over a real loopback TCP connection: every test
runs against the pure-Python reference and the C type, which must behave the same; and the C type is built
wherever a C compiler is (the extension is optional, so a failed build would otherwise pass unnoticed)."""

from __future__ import annotations

import gc
import shutil
import socket
import sysconfig
import weakref
from collections.abc import Iterator

import pytest

from bridge import outlet as outlet_module
from bridge.outlet import PyOutlet
from bridge.protocol import AUDIO_HEADER_320, HANGUP_MESSAGE, SILENCE_FRAME

IMPLEMENTATIONS = [PyOutlet]
if outlet_module.NATIVE:
    IMPLEMENTATIONS.append(outlet_module.Outlet)


def frame(k: int) -> bytes:
    """A distinct 320-byte payload per k."""
    return bytes([k % 256]) * 320


class Peer:
    """The outlet's side of a loopback TCP connection (`ours`) and Asterisk's (`theirs`), with what the
    outlet handed back to Python."""

    def __init__(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as server:
            self.theirs = socket.create_connection(server.getsockname())
            self.ours, _ = server.accept()
        self.ours.setblocking(False)
        self.theirs.settimeout(2)
        self.reads: list[bytes] = []
        self.read_result = True
        self.levels = 0
        self.blocked: list[bytes] = []
        self.written: list[bytes] = []

    def on_read(self, data: bytes) -> bool:
        self.reads.append(data)
        return self.read_result

    def on_level(self) -> None:
        self.levels += 1

    def on_blocked(self, rest: bytes) -> None:
        self.blocked.append(rest)

    def receive(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.theirs.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def nothing_waiting(self) -> bool:
        self.theirs.setblocking(False)
        try:
            return self.theirs.recv(1) == b""  # closed
        except BlockingIOError:
            return True
        finally:
            self.theirs.settimeout(2)

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: "native" if cls is not PyOutlet else "python")
def make(request: pytest.FixtureRequest, peer: Peer):  # type: ignore[no-untyped-def]
    def build(low_water: int = 2, *, direct: bool = True):  # type: ignore[no-untyped-def]
        out = request.param(peer.on_read, peer.on_level, peer.on_blocked, low_water)
        if direct:
            out.fd = peer.ours.fileno()
        else:
            out.write = peer.written.append
        return out
    return build


def test_the_extension_is_built_wherever_a_c_compiler_is() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the pure-Python outlet is the one in use")
    assert outlet_module.NATIVE, "bridge._outlet did not build: pip install -e . -v shows the compiler's error"
    assert outlet_module.Outlet is not PyOutlet


def test_an_empty_queue_sends_silence_and_counts_no_speech(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make()
    out.clock_tick()
    out.clock_tick()
    assert peer.receive(2 * 323) == SILENCE_FRAME * 2
    assert (out.frames_sent, out.speech_frames_sent, out.pending) == (2, 0, 0)


def test_messages_and_runs_go_out_in_order_and_a_run_is_read_in_place(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make()
    run = [frame(k) for k in range(1, 4)]
    copy = list(run)
    out.push(AUDIO_HEADER_320 + frame(0))
    out.push_run(run)
    out.push_run([])  # nothing to play: nothing queued
    out.push(AUDIO_HEADER_320 + frame(4))
    assert out.pending == 5
    for _ in range(6):
        out.clock_tick()
    got = peer.receive(6 * 323)
    assert got == b"".join(AUDIO_HEADER_320 + frame(k) for k in range(5)) + SILENCE_FRAME
    assert run == copy
    assert (out.frames_sent, out.speech_frames_sent, out.pending, out.spoke_at) == (6, 5, 0, 4)


def test_a_fade_goes_first_and_clear_drops_the_queue(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make()
    out.push_run([frame(1), frame(2)])
    out.push(AUDIO_HEADER_320 + frame(3))
    out.clock_tick()  # frame 1
    assert out.head_payload() == frame(2)
    out.fade = AUDIO_HEADER_320 + frame(9)
    out.clear()
    assert out.pending == 0 and out.head_payload() is None
    out.clock_tick()  # the fade
    out.clock_tick()  # silence
    assert peer.receive(3 * 323) == AUDIO_HEADER_320 + frame(1) + AUDIO_HEADER_320 + frame(9) + SILENCE_FRAME
    assert out.fade is None
    assert (out.frames_sent, out.speech_frames_sent) == (3, 1)
    out.push(AUDIO_HEADER_320 + frame(5))
    assert out.head_payload() == frame(5)


def test_one_plain_message_is_only_counted_while_nobody_listens(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make()
    out.count_plain = True
    peer.theirs.sendall(AUDIO_HEADER_320 + frame(1))
    out.clock_tick()
    assert out.frames_received == 1 and peer.reads == []
    out.count_plain = False  # someone listens: the message goes to Python
    peer.theirs.sendall(AUDIO_HEADER_320 + frame(2))
    out.clock_tick()
    assert peer.reads == [AUDIO_HEADER_320 + frame(2)] and out.frames_received == 1
    assert peer.receive(2 * 323) == SILENCE_FRAME * 2


def test_anything_but_one_plain_message_goes_to_python(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make()
    out.count_plain = True
    two = (AUDIO_HEADER_320 + frame(1)) * 2
    peer.theirs.sendall(two)
    out.clock_tick()
    dtmf = b"\x03\x00\x015"
    peer.theirs.sendall(dtmf)
    out.clock_tick()
    out.clock_tick()  # nothing arrived: no call
    assert peer.reads == [two, dtmf]
    assert out.frames_received == 0 and out.frames_sent == 3


def test_nothing_is_written_once_the_caller_has_gone(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make()
    peer.read_result = False
    peer.theirs.sendall(HANGUP_MESSAGE)
    out.clock_tick()
    assert peer.reads == [HANGUP_MESSAGE] and out.frames_sent == 0
    peer.theirs.shutdown(socket.SHUT_WR)  # end of file: b"" to Python, and still nothing written
    out.clock_tick()
    assert peer.reads == [HANGUP_MESSAGE, b""] and out.frames_sent == 0
    assert peer.nothing_waiting()


def test_without_a_socket_the_transport_writes(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make(direct=False)
    out.push_run([frame(1)])
    out.push(AUDIO_HEADER_320 + frame(2))
    for _ in range(3):
        out.clock_tick()
    assert peer.written == [AUDIO_HEADER_320 + frame(1), AUDIO_HEADER_320 + frame(2), SILENCE_FRAME]
    assert peer.reads == [] and out.frames_sent == 3


def test_no_transport_and_no_socket_is_a_clear_error(make) -> None:  # type: ignore[no-untyped-def]
    out = make(direct=False)
    out.write = None
    with pytest.raises(RuntimeError, match="no transport"):
        out.clock_tick()


def test_what_the_kernel_does_not_take_goes_to_python_whole(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    peer.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    out = make()
    run = [frame(k) for k in range(1, 2001)]
    out.push_run(run)
    ticks = 0
    while not peer.blocked and ticks < 2000:  # the peer reads nothing: the buffers fill
        out.clock_tick()
        ticks += 1
    assert peer.blocked, "the kernel never refused a frame"
    out.fd = -1  # what Call's on_blocked does: the transport writes from now on
    out.write = peer.written.append
    out.clock_tick()
    stream = b""
    peer.theirs.settimeout(0.5)
    while True:
        try:
            chunk = peer.theirs.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        stream += chunk
    stream += b"".join(peer.blocked) + b"".join(peer.written)
    assert stream == b"".join(AUDIO_HEADER_320 + f for f in run[:ticks + 1])


def test_a_waiting_producer_is_woken_at_low_water_and_a_drain_at_empty(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    out = make(low_water=2)
    out.push_run([frame(k) for k in range(4)])
    out.clock_tick()  # 3 left, nobody waits
    assert peer.levels == 0
    out.space_waiting = True
    out.clock_tick()  # 2 left: at low water
    assert peer.levels == 1
    out.space_waiting = False
    out.drain_waiting = True
    out.clock_tick()  # 1 left
    assert peer.levels == 1
    out.clock_tick()  # empty
    assert peer.levels == 2
    out.drain_waiting = False
    out.clock_tick()  # silence wakes no one
    assert peer.levels == 2


def test_close_writes_nothing_more_keeps_the_counters_and_lets_the_call_go(make, peer: Peer) -> None:  # type: ignore[no-untyped-def]
    class Owner:
        """Holds the outlet whose callbacks are its own methods: a reference cycle, as a Call makes."""

        def __init__(self, cls: type) -> None:
            self.out = cls(self.on_read, self.on_level, self.on_blocked, 2)

        def on_read(self, data: bytes) -> bool:
            return True

        def on_level(self) -> None: ...

        def on_blocked(self, rest: bytes) -> None: ...

    out = make()
    out.push(AUDIO_HEADER_320 + frame(1))
    out.clock_tick()
    out.push(AUDIO_HEADER_320 + frame(2))
    out.close()
    out.clock_tick()
    assert out.ended and out.fd == -1 and out.pending == 0
    assert (out.frames_sent, out.speech_frames_sent) == (1, 1)
    assert peer.receive(323) == AUDIO_HEADER_320 + frame(1) and peer.nothing_waiting()

    owner = Owner(type(out))
    owner.out.push_run([frame(1)])
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None, "an outlet and its call keep each other alive"


def test_bad_queue_entries_are_refused_by_name(make) -> None:  # type: ignore[no-untyped-def]
    out = make()
    with pytest.raises(TypeError, match="bytes"):
        out.push(bytearray(323))
    with pytest.raises(TypeError, match="list"):
        out.push_run(tuple([frame(1)]))
    out.push_run([b"short"])
    with pytest.raises(TypeError, match="320-byte"):
        out.clock_tick()
