"""The sans-I/O codec: byte layout, round trips over every split point, and each malformed input."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocol import (
    AUDIO_HEADER_320,
    FRAME_BYTES,
    HANGUP_MESSAGE,
    SAMPLE_RATES,
    SILENCE_FRAME,
    BadAudioLength,
    BadDTMF,
    BadUUIDLength,
    Decoder,
    FirstMessageNotUUID,
    IncompleteMessage,
    Kind,
    Message,
    ProtocolError,
    UnexpectedKind,
    audio_header,
    encode,
    encode_dtmf,
    encode_uuid,
)

CALL_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_wire_layout_matches_the_reference_examples():
    assert encode_uuid(CALL_UUID) == b"\x01\x00\x10" + CALL_UUID.bytes
    assert encode_dtmf("5") == bytes.fromhex("03000135")
    assert HANGUP_MESSAGE == b"\x00\x00\x00"
    assert bytes.fromhex("100140") == AUDIO_HEADER_320
    assert b"\x10\x01\x40" + bytes(320) == SILENCE_FRAME and FRAME_BYTES == 320
    assert encode(Kind.AUDIO_16K, b"\x01\x02" * 320)[:3] == bytes.fromhex("120280")
    assert encode(0x42, b"") == b"\x42\x00\x00"


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="16-bit length"):
        encode(Kind.AUDIO, bytes(65536))
    with pytest.raises(ValueError, match="one byte"):
        encode(256)
    with pytest.raises(ValueError, match="0-9"):
        encode_dtmf("x")
    with pytest.raises(ValueError, match="even"):
        audio_header(321)


def test_sample_rate_table_covers_every_audio_kind():
    assert SAMPLE_RATES == {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100,
                            0x16: 48000, 0x17: 96000, 0x18: 192000}
    assert Message(Kind.AUDIO_48K, b"").sample_rate == 48000
    assert Message(Kind.DTMF, b"7").sample_rate is None


def stream_messages() -> list[Message]:
    return [
        Message(Kind.UUID, CALL_UUID.bytes),
        Message(Kind.AUDIO, bytes(range(256)) + bytes(64)),
        Message(Kind.DTMF, b"#"),
        Message(Kind.AUDIO_16K, b"\x01\x00" * 3),
        Message(0x42, b"unknown kind, skipped by the receiver"),
        Message(Kind.ERROR, b""),
        Message(Kind.HANGUP, b""),
    ]


def stream_bytes(messages: list[Message]) -> bytes:
    return b"".join(encode(m.kind, m.payload) for m in messages)


def test_coalesced_stream_decodes_in_one_feed():
    messages = stream_messages()
    assert Decoder(expect_uuid=True).feed(stream_bytes(messages)) == messages


def test_every_split_point_of_a_multi_message_stream():
    messages = stream_messages()
    data = stream_bytes(messages)
    for i in range(len(data) + 1):
        decoder = Decoder(expect_uuid=True, strict_audio=True)
        out = decoder.feed(data[:i]) + decoder.feed(data[i:])
        assert out == messages, f"split at byte {i}"
        assert decoder.buffered == 0
        decoder.eof()  # nothing left over


@pytest.mark.parametrize("strict", [False, True])
def test_message_by_message_feed_takes_the_fast_path_with_the_same_checks(strict):
    messages = stream_messages()
    decoder = Decoder(expect_uuid=True, strict_audio=strict)
    out = []
    for m in messages:
        out += decoder.feed(encode(m.kind, m.payload))
    assert out == messages
    with pytest.raises(FirstMessageNotUUID):  # the fast path does not skip the first-message check
        Decoder(expect_uuid=True).feed(encode(Kind.AUDIO, bytes(FRAME_BYTES)))
    refusing = Decoder(allowed_kinds=frozenset({Kind.HANGUP}))
    with pytest.raises(UnexpectedKind):
        refusing.feed(encode(Kind.AUDIO, bytes(FRAME_BYTES)))


def test_byte_by_byte_feed():
    messages = stream_messages()
    decoder = Decoder(expect_uuid=True)
    out = []
    for b in stream_bytes(messages):
        out += decoder.feed(bytes([b]))
    assert out == messages


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_gives_the_same_messages(cuts):
    messages = stream_messages()
    data = stream_bytes(messages)
    points = sorted({min(c, len(data)) for c in cuts})
    decoder = Decoder(expect_uuid=True)
    out, prev = [], 0
    for p in [*points, len(data)]:
        out += decoder.feed(data[prev:p])
        prev = p
    assert out == messages


def test_message_accessors():
    m = Decoder().feed(encode_uuid(CALL_UUID) + encode_dtmf("B"))
    assert m[0].uuid == CALL_UUID
    assert m[1].digit == "B"


def test_first_message_not_uuid_is_refused_at_its_header():
    decoder = Decoder(expect_uuid=True)
    # only the header of a 320-byte audio message: refused without waiting for its payload
    with pytest.raises(FirstMessageNotUUID, match="kind 0x10"):
        decoder.feed(AUDIO_HEADER_320)
    with pytest.raises(FirstMessageNotUUID):  # the decoder stays broken
        decoder.feed(encode_uuid(CALL_UUID))


def test_uuid_of_wrong_length():
    with pytest.raises(BadUUIDLength, match=r"16 bytes.*15"):
        Decoder(expect_uuid=True).feed(encode(Kind.UUID, bytes(15)))
    with pytest.raises(BadUUIDLength):
        Decoder().feed(encode(Kind.UUID, bytes(17)))


@pytest.mark.parametrize("length", [0, 3, 319])
def test_strict_mode_refuses_zero_and_odd_audio(length):
    with pytest.raises(BadAudioLength, match=f"got {length}"):
        Decoder(strict_audio=True).feed(encode(Kind.AUDIO, bytes(length)))
    # lenient mode hands it on, for the receiver to judge
    assert Decoder().feed(encode(Kind.AUDIO, bytes(length))) == [Message(Kind.AUDIO, bytes(length))]


@pytest.mark.parametrize("payload", [b"", b"x", b"12"])
def test_bad_dtmf(payload):
    with pytest.raises(BadDTMF):
        Decoder().feed(encode(Kind.DTMF, payload))


def test_allowed_kinds_refuse_anything_else():
    decoder = Decoder(allowed_kinds=frozenset({Kind.AUDIO, Kind.HANGUP}))
    assert decoder.feed(SILENCE_FRAME + HANGUP_MESSAGE) == [Message(Kind.AUDIO, bytes(320)), Message(0, b"")]
    with pytest.raises(UnexpectedKind, match="0x03"):
        decoder.feed(encode_dtmf("1"))


def test_eof_mid_message_names_what_was_promised():
    decoder = Decoder(expect_uuid=True)
    decoder.feed(encode_uuid(CALL_UUID) + AUDIO_HEADER_320 + bytes(100))
    assert decoder.header_pending and decoder.buffered == 103
    with pytest.raises(IncompleteMessage, match="promised 320 payload bytes but only 100"):
        decoder.eof()
    partial = Decoder()
    partial.feed(b"\x10\x01")
    with pytest.raises(IncompleteMessage, match="2 byte"):
        partial.eof()


def test_every_error_is_a_protocol_error():
    for cls in (FirstMessageNotUUID, BadUUIDLength, BadAudioLength, BadDTMF, UnexpectedKind, IncompleteMessage):
        assert issubclass(cls, ProtocolError) and issubclass(cls, ValueError)


def _decode_in_pieces(data: bytes, points: list[int], **mode) -> tuple[list[Message], type | None]:
    """Messages decoded, and the error class raised (None if none), feeding `data` cut at `points`."""
    decoder = Decoder(**mode)
    out: list[Message] = []
    prev = 0
    try:
        for p in [*points, len(data)]:
            out += decoder.feed(data[prev:p])
            prev = p
    except ProtocolError as exc:
        return out + exc.messages, type(exc)
    return out, None


_MESSAGES = st.one_of(
    st.builds(encode_uuid, st.just(CALL_UUID)),
    st.sampled_from([HANGUP_MESSAGE, SILENCE_FRAME, encode_dtmf("5"), encode(Kind.AUDIO, b"\x01\x02" * 80)]),
    st.binary(min_size=1, max_size=5).map(lambda b: encode(Kind.AUDIO, b)),  # odd or short audio
    st.builds(lambda k, p: bytes([k]) + len(p).to_bytes(2, "big") + p,
              st.sampled_from([0x01, 0x03, 0x12, 0x42, 0xFF]), st.binary(max_size=20)),
)
_MODES = st.fixed_dictionaries({
    "expect_uuid": st.booleans(),
    "strict_audio": st.booleans(),
    "allowed_kinds": st.sampled_from([None, frozenset({0x00, 0x10}), frozenset({0x00, 0x03, 0x10})]),
})


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(_MESSAGES, min_size=1, max_size=6), mode=_MODES, data=st.data())
def test_decoding_does_not_depend_on_how_the_bytes_are_split(parts, mode, data):
    """Any stream, valid or not, in any decoder mode: the same messages and the same error, however split."""
    stream = b"".join(parts)
    whole = _decode_in_pieces(stream, [], **mode)
    points = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    assert _decode_in_pieces(stream, points, **mode) == whole
    assert _decode_in_pieces(stream, list(range(1, len(stream))), **mode) == whole  # byte by byte


def test_a_uuid_split_across_reads_is_accepted_with_allowed_kinds():
    """The probe's case: expect_uuid with allowed kinds {0x00, 0x10} and the UUID in two reads."""
    decoder = Decoder(expect_uuid=True, allowed_kinds=frozenset({0x00, 0x10}))
    raw = encode_uuid(CALL_UUID)
    assert decoder.feed(raw[:5]) == []
    assert decoder.feed(raw[5:]) == [Message(Kind.UUID, CALL_UUID.bytes)]
    with pytest.raises(UnexpectedKind):
        decoder.feed(encode_dtmf("1"))
