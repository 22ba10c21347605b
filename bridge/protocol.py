"""The AudioSocket wire protocol, sans-I/O: bytes in, messages out; messages in, bytes out.

Every message is `kind` (1 byte) + `length` (uint16, big-endian) + `length` bytes of payload, in both
directions (Asterisk's res_audiosocket.c and the AudioSocket page of docs.asterisk.org). Nothing here
touches a socket, a clock or a logger, so the same codec serves the server (`bridge.call`), the simulated
caller (`bridge.sim.caller`) and the tests, the way `h11` and `wsproto` keep HTTP and WebSocket apart from
their I/O.

The hot path (50 frames a second per call, both ways) is kept cheap: outbound audio is one precomputed
header plus the payload, silence and hang-up are constants, and `Decoder.feed` takes a shortcut when a read
holds exactly one whole message, which is what a paced peer sends.
"""

from __future__ import annotations

import enum
import uuid as uuid_module
from typing import NamedTuple

# 20 ms of signed 16-bit little-endian mono at 8 kHz (320 bytes): what app_audiosocket sends and expects.
# voice.audio (the codec) owns these facts; they are re-exported here for the telephony side.
from voice.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE

__all__ = [
    "Kind", "Message", "SAMPLE_RATES", "DTMF_CHARS", "DTMF_DIGITS", "SAMPLE_RATE", "FRAME_MS", "FRAME_BYTES",
    "HEADER_BYTES", "MAX_PAYLOAD", "encode", "encode_uuid", "encode_dtmf", "audio_header",
    "AUDIO_HEADER_320", "SILENCE_PAYLOAD", "SILENCE_FRAME", "HANGUP_MESSAGE",
    "Decoder", "ProtocolError", "FirstMessageNotUUID", "BadUUIDLength", "BadAudioLength", "BadDTMF",
    "UnexpectedKind", "IncompleteMessage",
]


HEADER_BYTES = 3
MAX_PAYLOAD = 0xFFFF


class Kind(enum.IntEnum):
    """Message kinds. 0x11..0x18 are slin at higher rates (channel-driver mode, Asterisk 20.17+)."""

    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10
    AUDIO_12K = 0x11
    AUDIO_16K = 0x12
    AUDIO_24K = 0x13
    AUDIO_32K = 0x14
    AUDIO_44K = 0x15
    AUDIO_48K = 0x16
    AUDIO_96K = 0x17
    AUDIO_192K = 0x18
    ERROR = 0xFF


SAMPLE_RATES: dict[int, int] = {
    Kind.AUDIO: SAMPLE_RATE,
    Kind.AUDIO_12K: 12000,
    Kind.AUDIO_16K: 16000,
    Kind.AUDIO_24K: 24000,
    Kind.AUDIO_32K: 32000,
    Kind.AUDIO_44K: 44100,
    Kind.AUDIO_48K: 48000,
    Kind.AUDIO_96K: 96000,
    Kind.AUDIO_192K: 192000,
}
"""Audio kind -> sample rate (Hz). A kind is audio exactly when it is a key here."""

# The decoder's hot path compares plain ints (a member lookup per message costs more than the compare).
_AUDIO, _UUID, _DTMF = int(Kind.AUDIO), int(Kind.UUID), int(Kind.DTMF)
_FRAME_MESSAGE_BYTES = HEADER_BYTES + FRAME_BYTES  # one whole 20 ms slin message: 323

DTMF_CHARS = "0123456789*#ABCD"
"""The DTMF digits a 0x03 message may carry (RFC 4733 events 0-15), in keypad order."""
DTMF_DIGITS = frozenset(DTMF_CHARS.encode("ascii"))
"""The same digits as byte values, for checking a payload byte."""


class Message(NamedTuple):
    """One decoded message. `kind` is an int (compare with `Kind` members); unknown kinds are kept as is."""

    kind: int
    payload: bytes

    @property
    def sample_rate(self) -> int | None:
        """The audio sample rate for audio kinds, else None."""
        return SAMPLE_RATES.get(self.kind)

    @property
    def uuid(self) -> uuid_module.UUID:
        """The UUID of a 0x01 message (16 raw bytes, not text)."""
        return uuid_module.UUID(bytes=self.payload)

    @property
    def digit(self) -> str:
        """The digit of a 0x03 message."""
        return self.payload.decode("ascii")


# --- errors -------------------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """Input that breaks the AudioSocket protocol. The message says what arrived and what was expected.

    `messages` holds the well-formed messages that the same `feed()` completed before the fault, in order:
    a receiver handles them first (the audio before the garbage was real audio).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.messages: list[Message] = []  # per error: a class-level list would be shared by every instance


class FirstMessageNotUUID(ProtocolError):
    """The first message of a connection was not 0x01 (Asterisk always sends its UUID first)."""


class BadUUIDLength(ProtocolError):
    """A 0x01 message whose payload is not exactly 16 bytes."""


class BadAudioLength(ProtocolError):
    """Audio with a zero or odd length (refused in strict mode, as Asterisk 20.14+ refuses zero-length)."""


class BadDTMF(ProtocolError):
    """A 0x03 message that is not one ASCII byte of 0-9 * # A-D."""


class UnexpectedKind(ProtocolError):
    """A kind the receiving side must not get (e.g. a server sending 0x01 to Asterisk)."""


class IncompleteMessage(ProtocolError):
    """The stream ended in the middle of a message (a length field promised more than ever arrived)."""


# --- encoding -----------------------------------------------------------------------------------------


def encode(kind: int, payload: bytes = b"") -> bytes:
    """Header + payload as one `bytes`, to be written in one call (Asterisk 20.15+ tears a call down when a
    payload arrives more than 5 ms after its header)."""
    length = len(payload)
    if length > MAX_PAYLOAD:
        raise ValueError(f"payload of {length} bytes does not fit the 16-bit length field (max {MAX_PAYLOAD})")
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"kind must be one byte, got {kind}")
    return bytes((kind, length >> 8, length & 0xFF)) + bytes(payload)


def audio_header(length: int, kind: int = Kind.AUDIO) -> bytes:
    """The 3-byte header of an audio message of `length` bytes (precompute it; then header + payload)."""
    if length <= 0 or length % 2 or length > MAX_PAYLOAD:
        raise ValueError(f"audio length must be even and between 2 and {MAX_PAYLOAD - 1}, got {length}")
    return bytes((kind, length >> 8, length & 0xFF))


def encode_uuid(call_uuid: uuid_module.UUID) -> bytes:
    return encode(Kind.UUID, call_uuid.bytes)


def encode_dtmf(digit: str) -> bytes:
    raw = digit.encode("ascii", "replace")
    if len(raw) != 1 or raw[0] not in DTMF_DIGITS:
        raise ValueError(f"DTMF digit must be one of 0-9 * # A-D, got {digit!r}")
    return encode(Kind.DTMF, raw)


AUDIO_HEADER_320 = audio_header(FRAME_BYTES)
"""Header of one 20 ms slin 8 kHz frame: 10 01 40."""
SILENCE_PAYLOAD = bytes(FRAME_BYTES)
SILENCE_FRAME = AUDIO_HEADER_320 + SILENCE_PAYLOAD
"""A whole 20 ms silence message, ready to write."""
HANGUP_MESSAGE = encode(Kind.HANGUP)
"""00 00 00: ends the session."""


# --- decoding -----------------------------------------------------------------------------------------


class Decoder:
    """Incremental decoder: `feed()` any chunk (split anywhere, or many messages coalesced), get whole messages.

    `expect_uuid=True` (the server side) checks that the first message is a 16-byte UUID as soon as its header
    arrives, so garbage is refused after 3 bytes instead of waiting for a length that may never come.
    `strict_audio=True` refuses zero- and odd-length audio. `allowed_kinds`, when given, refuses any other
    kind (the simulated caller uses it to refuse what Asterisk would refuse from a server).
    DTMF payloads are always checked. Unknown kinds are returned, for the caller to skip.
    After a `ProtocolError` the decoder is unusable: the connection should be closed.
    """

    __slots__ = ("_buf", "_expect_uuid", "_strict_audio", "_allowed", "_broken", "_fast320", "_head_checked")

    def __init__(
        self,
        *,
        expect_uuid: bool = False,
        strict_audio: bool = False,
        allowed_kinds: frozenset[int] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._expect_uuid = expect_uuid
        self._strict_audio = strict_audio
        self._allowed = allowed_kinds
        self._broken: ProtocolError | None = None
        self._fast320 = self._may_skip_checks()
        self._head_checked = False
        """The header at the start of the buffer was checked already (its payload is still arriving).

        Checking a header is not idempotent (the first one flips `expect_uuid`), so a message split across
        reads must be checked once, or decoding would depend on where the bytes were split."""

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a message."""
        return len(self._buf)

    @property
    def header_pending(self) -> bool:
        """True when a whole header is buffered but its payload is not complete yet."""
        return len(self._buf) >= HEADER_BYTES

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return the messages completed by them, in order (possibly none)."""
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        if not buf:
            # Fast path: one whole message in one read, the normal case for a paced peer.
            n = len(data)
            if n >= HEADER_BYTES and n == HEADER_BYTES + ((data[1] << 8) | data[2]):
                kind = data[0]
                if kind == _AUDIO and n == _FRAME_MESSAGE_BYTES and self._fast320:  # 20 ms of slin8: always valid
                    return [Message(_AUDIO, data[HEADER_BYTES:])]
                self._check_header(kind, n - HEADER_BYTES)
                payload = data[HEADER_BYTES:]
                if kind == _DTMF:
                    self._check_dtmf(payload)
                return [Message(kind, bytes(payload))]
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        checked = self._head_checked
        self._head_checked = False
        try:
            while end - pos >= HEADER_BYTES:
                kind = buf[pos]
                length = (buf[pos + 1] << 8) | buf[pos + 2]
                if checked:
                    checked = False
                else:
                    self._check_header(kind, length)
                stop = pos + HEADER_BYTES + length
                if stop > end:
                    self._head_checked = True
                    break
                payload = bytes(buf[pos + HEADER_BYTES:stop])
                if kind == _DTMF:
                    self._check_dtmf(payload)
                out.append(Message(kind, payload))
                pos = stop
        except ProtocolError as exc:
            exc.messages = out
            raise
        finally:
            if pos:
                del buf[:pos]
        return out

    def eof(self) -> None:
        """The peer closed: raise `IncompleteMessage` if a message was cut off."""
        if self._buf:
            have = len(self._buf)
            if have >= HEADER_BYTES:
                kind = self._buf[0]
                want = (self._buf[1] << 8) | self._buf[2]
                problem = (f"a message of kind 0x{kind:02x} promised {want} payload bytes "
                           f"but only {have - HEADER_BYTES} arrived before the connection closed")
            else:
                problem = f"the connection closed after {have} byte(s) of a 3-byte header"
            self._broken = IncompleteMessage(problem)
            raise self._broken

    def _check_header(self, kind: int, length: int) -> None:
        if self._expect_uuid:
            if kind != _UUID:
                self._fail(FirstMessageNotUUID(
                    f"the first message must be a UUID (kind 0x01), got kind 0x{kind:02x} with length {length}"))
            if length != 16:
                self._fail(BadUUIDLength(f"a UUID message must carry 16 bytes, this one says {length}"))
            self._expect_uuid = False
            self._fast320 = self._may_skip_checks()
            return
        if self._allowed is not None and kind not in self._allowed:
            self._fail(UnexpectedKind(f"kind 0x{kind:02x} is not allowed here "
                                      f"(allowed: {', '.join(f'0x{k:02x}' for k in sorted(self._allowed))})"))
        if kind == _UUID and length != 16:
            self._fail(BadUUIDLength(f"a UUID message must carry 16 bytes, this one says {length}"))
        if self._strict_audio and kind in SAMPLE_RATES and (length == 0 or length % 2):
            self._fail(BadAudioLength(f"audio (kind 0x{kind:02x}) must have an even, non-zero length, got {length}"))

    def _may_skip_checks(self) -> bool:
        """True when a whole 320-byte 0x10 message needs no check (the hot path)."""
        return not self._expect_uuid and (self._allowed is None or _AUDIO in self._allowed)

    def _check_dtmf(self, payload: bytes) -> None:
        if len(payload) != 1 or payload[0] not in DTMF_DIGITS:
            self._fail(BadDTMF(f"a DTMF message must carry one of 0-9 * # A-D, got {bytes(payload)!r}"))

    def _fail(self, error: ProtocolError) -> None:
        self._broken = error
        raise error
