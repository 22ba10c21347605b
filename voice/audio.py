"""The one codec of the voice side: audio in any supported format -> 8 kHz mono s16le in 20 ms frames.

Audio is normalised where it enters (a TTS stream, a WAV file) and never again: the cache stores frames
ready to send. Streaming conversion keeps every piece of state between chunks (the odd byte of a split
sample, the resampler's filter state, a partial frame), so converting a stream chunk by chunk yields exactly
the bytes of converting it whole, wherever the chunk boundaries fall.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

try:  # Python <= 3.12 ships audioop; 3.13+ gets it from the audioop-lts package.
    import audioop
except ImportError:  # pragma: no cover - depends on the interpreter
    import audioop_lts as audioop  # type: ignore[no-redef]

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * SAMPLE_WIDTH * FRAME_MS // 1000  # 320


def frame_bytes_for(chunk_size_ms: int, rate: int = SAMPLE_RATE) -> int:
    """Bytes of s16le mono audio in `chunk_size_ms` at `rate`; always a whole number of samples."""
    if chunk_size_ms <= 0:
        raise ValueError(f"chunk_size_ms must be positive, got {chunk_size_ms}")
    samples = rate * chunk_size_ms // 1000
    if samples <= 0:
        raise ValueError(f"chunk_size_ms={chunk_size_ms} is less than one sample at {rate} Hz")
    return samples * SAMPLE_WIDTH


class AudioFormatError(ValueError):
    """Audio that cannot be converted: an unknown format, or a WAV file that is not usable PCM."""


# --- streaming conversion ------------------------------------------------------------------------------


class Resampler:
    """s16le mono at `rate` -> s16le mono at 8 kHz, chunk by chunk, carrying a split sample and the filter."""

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise AudioFormatError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._state = None
        self._odd = b""

    def feed(self, data: bytes) -> bytes:
        if self._odd:
            data = self._odd + data
            self._odd = b""
        if len(data) % 2:
            self._odd = data[-1:]
            data = data[:-1]
        if not data or self.rate == SAMPLE_RATE:
            return data
        out, self._state = audioop.ratecv(data, SAMPLE_WIDTH, 1, self.rate, SAMPLE_RATE, self._state)
        return out

    def flush(self) -> bytes:
        """A dangling half sample at the very end is dropped: it is not audio."""
        self._odd = b""
        return b""


class G711Decoder:
    """μ-law or A-law bytes (8 kHz) -> s16le; stateless, one byte per sample."""

    def __init__(self, law: str) -> None:
        self._decode = audioop.ulaw2lin if law == "ulaw" else audioop.alaw2lin

    def feed(self, data: bytes) -> bytes:
        return self._decode(data, SAMPLE_WIDTH) if data else b""

    def flush(self) -> bytes:
        return b""


_PCM_RATES = {f"pcm_{rate}": rate for rate in (8000, 16000, 22050, 24000, 44100, 48000)}


def stream_decoder(output_format: str) -> Resampler | G711Decoder:
    """A converter for a provider's `output_format` (ElevenLabs naming) to 8 kHz s16le."""
    if output_format in _PCM_RATES:
        return Resampler(_PCM_RATES[output_format])
    if output_format in ("ulaw_8000", "alaw_8000"):
        return G711Decoder(output_format[:4])
    raise AudioFormatError(
        f"unsupported output format {output_format!r}; use one of {', '.join([*_PCM_RATES, 'ulaw_8000', 'alaw_8000'])}"
    )


def sample_width(output_format: str) -> int:
    """Bytes per sample of a provider format: 2 for `pcm_*`, 1 for G.711."""
    stream_decoder(output_format)  # raises AudioFormatError for an unknown format
    return SAMPLE_WIDTH if output_format in _PCM_RATES else 1


class SampleAligner:
    """Passes provider chunks through whole samples only, carrying a split sample to the next chunk.

    Provider chunk boundaries are arbitrary (a 16-bit sample can be split between two chunks); a consumer
    that is not a `FrameStream` (which carries the byte itself) can then treat every chunk as whole samples.
    A dangling half sample at the very end is dropped, as `Resampler.flush` does.
    """

    def __init__(self, output_format: str) -> None:
        self.width = sample_width(output_format)
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        if self.width == 1:
            return data
        if self._carry:
            data = self._carry + data
            self._carry = b""
        cut = len(data) - len(data) % self.width
        if cut != len(data):
            self._carry = data[cut:]
            data = data[:cut]
        return data


def encode_g711(pcm: bytes, law: str) -> bytes:
    """8 kHz s16le -> μ-law (`law="ulaw"`) or A-law (`"alaw"`) bytes; the inverse of `G711Decoder`."""
    if law not in ("ulaw", "alaw"):
        raise AudioFormatError(f"unknown G.711 law {law!r}; use ulaw or alaw")
    encode = audioop.lin2ulaw if law == "ulaw" else audioop.lin2alaw
    return encode(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], SAMPLE_WIDTH)


class Framer:
    """Cuts a byte stream into frames of `frame_bytes`, carrying the remainder; pads only at the end."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0 or frame_bytes % SAMPLE_WIDTH:
            raise ValueError(f"frame_bytes must be a positive even number, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // self.frame_bytes * self.frame_bytes
        if not n:
            return []
        size = self.frame_bytes
        frames = [bytes(self._buf[i : i + size]) for i in range(0, n, size)]
        del self._buf[:n]
        return frames

    def flush(self) -> list[bytes]:
        if not self._buf:
            return []
        frame = bytes(self._buf) + b"\x00" * (self.frame_bytes - len(self._buf))
        self._buf.clear()
        return [frame]


class FrameStream:
    """Provider chunks in, ready-to-send 20 ms 8 kHz frames out: decoder and framer in one object."""

    def __init__(self, output_format: str, frame_bytes: int = FRAME_BYTES) -> None:
        self._decoder = stream_decoder(output_format)
        self._framer = Framer(frame_bytes)

    def feed(self, chunk: bytes) -> list[bytes]:
        return self._framer.feed(self._decoder.feed(chunk))

    def flush(self) -> list[bytes]:
        return self._framer.feed(self._decoder.flush()) + self._framer.flush()


def to_frames(pcm: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Whole 8 kHz s16le audio -> frames, the last one padded with silence."""
    framer = Framer(frame_bytes)
    return framer.feed(pcm) + framer.flush()


# --- WAV files -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WavAudio:
    """A WAV file converted to 8 kHz mono s16le, with a description of what it was."""

    path: str
    pcm: bytes
    source_rate: int
    source_width: int
    source_channels: int

    @property
    def source_format(self) -> str:
        layout = {1: "mono", 2: "stereo"}.get(self.source_channels, f"{self.source_channels} channels")
        return f"{self.source_rate} Hz {self.source_width * 8}-bit {layout}"

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)


def convert_pcm(data: bytes, rate: int, width: int, channels: int) -> bytes:
    """Whole linear PCM (WAV conventions: 8-bit unsigned, 16/24/32-bit signed) -> 8 kHz mono s16le."""
    if width == 1:
        data = audioop.bias(data, 1, -128)  # WAV 8-bit is unsigned
    if channels == 2:
        data = audioop.tomono(data, width, 0.5, 0.5)
    elif channels != 1:
        raise AudioFormatError(f"{channels} channels: only mono and stereo are supported")
    if width != SAMPLE_WIDTH:
        data = audioop.lin2lin(data, width, SAMPLE_WIDTH)
    if rate != SAMPLE_RATE:
        data, _ = audioop.ratecv(data, SAMPLE_WIDTH, 1, rate, SAMPLE_RATE, None)
    return data


def read_wav(path: str | Path) -> WavAudio:
    """Read and convert a PCM WAV file. Blocking: call it in a thread from async code.

    Raises AudioFormatError naming the file and the problem (missing, not WAV, compressed, empty, ...).
    """
    name = str(path)
    try:
        with wave.open(name, "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise AudioFormatError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise AudioFormatError(f"{name}: is a directory, not a WAV file") from None
    except PermissionError:
        raise AudioFormatError(f"{name}: permission denied") from None
    except wave.Error as exc:
        message = str(exc)
        if "unknown format" in message:
            problem = f"compressed or non-PCM WAV ({message}); convert it to PCM first"
        else:
            problem = f"not a usable WAV file ({message})"
        raise AudioFormatError(f"{name}: {problem}") from None
    except (EOFError, OSError) as exc:
        if isinstance(exc, EOFError) and Path(name).stat().st_size == 0:
            raise AudioFormatError(f"{name}: empty file, not a WAV file") from None
        raise AudioFormatError(f"{name}: truncated or unreadable WAV file ({str(exc) or type(exc).__name__})") from None
    if width not in (1, 2, 3, 4):
        raise AudioFormatError(f"{name}: {width * 8}-bit samples are not supported")
    if channels not in (1, 2):
        raise AudioFormatError(f"{name}: {channels} channels; only mono and stereo are supported")
    if rate < 1000 or rate > 384000:
        raise AudioFormatError(f"{name}: implausible sample rate {rate} Hz")
    usable = len(raw) - len(raw) % (width * channels)
    if usable <= 0:
        raise AudioFormatError(f"{name}: contains no audio")
    pcm = convert_pcm(raw[:usable], rate, width, channels)
    return WavAudio(path=name, pcm=pcm, source_rate=rate, source_width=width, source_channels=channels)


def write_wav(path: str | Path, pcm: bytes, rate: int = SAMPLE_RATE) -> None:
    """Write mono s16le PCM as a WAV file (recordings, generated fixtures)."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def rms(frame: bytes) -> int:
    """Root-mean-square energy of an s16le frame (silence detection, barge-in, tests)."""
    return audioop.rms(frame, SAMPLE_WIDTH) if frame else 0
