"""The one codec of the voice side: audio in any supported format -> 8 kHz mono s16le in 20 ms frames.

Audio is normalised where it enters (a TTS stream, a recording) and never again: the cache stores frames
ready to send. Streaming conversion keeps every piece of state between chunks (the odd byte of a split
sample, the resampler's filter state, a partial frame, the held gain), so converting a stream chunk by chunk
yields exactly the bytes of converting it whole, wherever the chunk boundaries fall.

Sample-rate conversion is band-limited (`Resampler`); recordings are read by libsndfile (`read_audio`: WAV
of every kind, FLAC, OGG/Vorbis, ...); loudness is measured and levelled here too (`Loudness`,
`normalize` for files, `StreamLeveller` for streams). audioop does G.711, sample widths and levels.
"""

from __future__ import annotations

import audioop
import functools
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from voice.formats import G711_FORMATS, OUTPUT_FORMATS, PCM_RATES, bytes_per_sample

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

PASS_HZ = 3400.0
"""The telephone band's top: flat up to here (within 0.01 dB, measured in tests/tts/test_audio.py)."""
STOP_HZ = 4200.0
"""From here on the input is attenuated by at least `STOP_DB` before it can fold back into the band."""
STOP_DB = 70.0


@functools.cache
def _design(rate: int, realtime: bool) -> tuple[int, int, int, int, np.ndarray]:
    """(up, down, taps per phase, delay compensated, phase filters) of the low-pass for `rate` -> 8 kHz.

    Linear phase (files): its delay is compensated, so output sample k is the input at time k*down/up.
    `realtime` (streams): the same magnitude response made minimum-phase (cepstrum) and causal, so
    every output sample is ready as soon as its input has arrived (no look-ahead, nothing held back at a
    pause); its group delay in the voice band is a fraction of a ms, and phase is not something a
    telephone listener hears.
    """
    common = math.gcd(rate, SAMPLE_RATE)
    up, down = SAMPLE_RATE // common, rate // common
    width = 2 * math.pi * (STOP_HZ - PASS_HZ) / rate
    taps = math.ceil((STOP_DB - 8) / (2.285 * width)) + 1 | 1  # Kaiser's estimate, odd
    length = up * taps - (1 - up * taps % 2)  # odd: a whole-sample delay to compensate
    delay = (length - 1) // 2
    cutoff = (PASS_HZ + STOP_HZ) / 2 / (rate * up)
    n = np.arange(length) - delay
    beta = 0.1102 * (STOP_DB - 8.7)
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, beta) * up
    if realtime:
        h, delay = _minimum_phase(h), 0
    h = np.concatenate([h, np.zeros(up * taps - length)])
    return up, down, taps, delay, h.reshape(taps, up).T.copy()


def _minimum_phase(h: np.ndarray) -> np.ndarray:
    """The minimum-phase filter with (nearly) the magnitude response of `h`, by the real cepstrum."""
    size = 1 << (len(h) * 8 - 1).bit_length()
    magnitude = np.abs(np.fft.fft(h, size))
    cepstrum = np.fft.ifft(np.log(np.maximum(magnitude, magnitude.max() * 1e-10))).real
    fold = np.zeros(size)
    fold[0], fold[size // 2] = cepstrum[0], cepstrum[size // 2]
    fold[1 : size // 2] = 2 * cepstrum[1 : size // 2]
    return np.fft.ifft(np.exp(np.fft.fft(fold))).real[: len(h)]


class _Polyphase:
    """A band-limited rational resampler `rate` -> 8 kHz: a Kaiser-windowed sinc low-pass in polyphase form.

    Why not audioop.ratecv: it has no anti-alias filter (a 6 kHz tone at 16 kHz came out as a full-level
    2 kHz tone). Why not libsoxr's streaming resampler: it emits in blocks of ~100 ms and keeps the last
    100-160 ms of a stream until more input or the end arrives, so an LLM answer spoken phrase by phrase
    lost the end of each phrase until the next one came (measured: tests/llm). This filter looks ahead
    only 2.7 ms (half its length), and every output sample is computed from the same input samples the
    same way however the stream is cut, so chunked conversion is byte-equal to whole conversion.

    Output sample k is the input at time k*M/L (the filter's delay is compensated), so frame boundaries
    and tone timing are kept.
    """

    def __init__(self, rate: int, *, realtime: bool = False) -> None:
        self.up, self.down, self.taps, self.delay, self.phases = _design(rate, realtime)
        """phases[p, j] = h[p + j * up]: output at prototype time t uses phase t % up."""
        self._offsets = np.arange(self.taps)
        taps = self.taps
        self._reversed = self.phases[0][::-1].copy()
        """The single phase, oldest input first (the order of a sliding window)."""
        self._buf = np.zeros(taps)
        self._start = -taps  # absolute index of _buf[0]; the stream is preceded by silence
        self._received = 0
        self._next = 0  # index of the next output sample

    def _run(self, end: int) -> np.ndarray:
        if end <= self._next:
            return np.zeros(0)
        if self.up == 1:  # 16, 24, 48 kHz: a single phase, decimated by `down`
            first = self._next * self.down + self.delay - self.taps + 1 - self._start
            out = self._decimate(first, end - self._next)
        else:
            t = np.arange(self._next, end, dtype=np.int64) * self.down + self.delay
            newest = t // self.up
            windows = self._buf[newest[:, None] - self._offsets[None, :] - self._start]
            out = (windows * self.phases[t % self.up]).sum(axis=1)
        self._next = end
        drop = (end * self.down + self.delay) // self.up - self.taps + 1 - self._start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._start += drop
        return out

    def _decimate(self, first: int, count: int) -> np.ndarray:
        """`count` outputs of the single phase, output k from `_buf[first + k*down :][:taps]`, as `down`
        polyphase correlations at the output rate: `down` C loops over contiguous arrays, no temporary of
        count x taps (multiplying strided windows and summing them cost 4-5 times as much: TTS audio comes
        in bursts, 100 calls' answers at once, and this ran on the event loop)."""
        down, buf, reversed_ = self.down, self._buf, self._reversed
        out = np.zeros(count)
        for phase in range(down):
            taps = reversed_[phase::down]
            if not len(taps):
                continue
            start = first + phase
            x = np.ascontiguousarray(buf[start : start + (count + len(taps) - 1) * down : down])
            out += np.correlate(x, taps, "valid")
        return out

    def feed(self, samples: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, samples])
        self._received += len(samples)
        ready = self._received * self.up - self.delay  # outputs whose newest input sample has arrived
        return self._run(-(-ready // self.down) if ready > 0 else 0)

    def flush(self) -> np.ndarray:
        """The outputs still owed (the stream is followed by silence); then the filter starts afresh."""
        total = -(-self._received * self.up // self.down)
        missing = (max(total - 1, 0) * self.down + self.delay) // self.up + 1 - self._received
        if missing > 0:
            self._buf = np.concatenate([self._buf, np.zeros(missing)])
        out = self._run(total)
        self._buf, self._start, self._received, self._next = np.zeros(self.taps), -self.taps, 0, 0
        return out


class Resampler:
    """s16le mono at `rate` -> s16le mono at 8 kHz, chunk by chunk, band-limited (`_Polyphase`).

    State is kept across chunks (a split sample, the filter's history): converting a stream chunk by
    chunk yields exactly the bytes of converting it whole. 8 kHz input passes through untouched.
    """

    def __init__(self, rate: int, *, realtime: bool = True) -> None:
        """`realtime`: a stream (TTS), converted with no look-ahead; False: a file, converted with exact
        timing (linear phase, delay compensated)."""
        if rate <= 0:
            raise AudioFormatError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._odd = b""
        self._filter = _Polyphase(rate, realtime=realtime) if rate != SAMPLE_RATE else None

    def feed(self, data: bytes) -> bytes:
        if self._odd:
            data = self._odd + data
            self._odd = b""
        if len(data) % 2:
            self._odd = data[-1:]
            data = data[:-1]
        if self._filter is None or not data:
            return data
        return _s16le(self._filter.feed(_samples(data)))

    def flush(self) -> bytes:
        """The filter's tail. A dangling half sample at the very end is dropped: it is not audio."""
        self._odd = b""
        return _s16le(self._filter.flush()) if self._filter is not None else b""


def _samples(data: bytes) -> np.ndarray:
    """s16le bytes -> float samples in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2") * (1 / 32768)


def _s16le(samples: np.ndarray) -> bytes:
    """float samples -> s16le bytes, rounded to the nearest step and clipped at full scale."""
    if not len(samples):
        return b""
    return np.clip(np.rint(samples * 32768), -32768, 32767).astype("<i2").tobytes()


class G711Decoder:
    """μ-law or A-law bytes (8 kHz) -> s16le; stateless, one byte per sample."""

    def __init__(self, law: str) -> None:
        self._decode = audioop.ulaw2lin if law == "ulaw" else audioop.alaw2lin

    def feed(self, data: bytes) -> bytes:
        return self._decode(data, SAMPLE_WIDTH) if data else b""

    def flush(self) -> bytes:
        return b""


def stream_decoder(output_format: str) -> Resampler | G711Decoder:
    """A converter for a provider's `output_format` (ElevenLabs naming) to 8 kHz s16le."""
    if output_format in PCM_RATES:
        return Resampler(PCM_RATES[output_format])
    if output_format in G711_FORMATS:
        return G711Decoder(output_format[:4])
    raise AudioFormatError(f"unsupported output format {output_format!r}; use one of {', '.join(OUTPUT_FORMATS)}")


def sample_width(output_format: str) -> int:
    """Bytes per sample of a provider format: 2 for `pcm_*`, 1 for G.711."""
    stream_decoder(output_format)  # raises AudioFormatError for an unknown format
    return bytes_per_sample(output_format)


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


def decode_ulaw(data: bytes) -> bytes:
    """μ-law bytes -> 8 kHz s16le (inbound audio Asterisk sent as μ-law under the slin label)."""
    return audioop.ulaw2lin(data, SAMPLE_WIDTH) if data else b""


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
    """Provider chunks in, ready-to-send 20 ms 8 kHz frames out: decoder, framer and (with `loudness`) a
    `StreamLeveller` in one object."""

    def __init__(self, output_format: str, frame_bytes: int = FRAME_BYTES, *,
                 loudness: Loudness | None = None) -> None:
        self._decoder = stream_decoder(output_format)
        self._framer = Framer(frame_bytes)
        self.leveller = StreamLeveller(loudness) if loudness is not None else None

    def feed(self, chunk: bytes) -> list[bytes]:
        frames = self._framer.feed(self._decoder.feed(chunk))
        return self.leveller.feed(frames) if self.leveller is not None else frames

    def flush(self) -> list[bytes]:
        frames = self._framer.feed(self._decoder.flush()) + self._framer.flush()
        if self.leveller is not None:
            frames = self.leveller.feed(frames) + self.leveller.flush()
        return frames


def to_frames(pcm: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Whole 8 kHz s16le audio -> frames, the last one padded with silence."""
    framer = Framer(frame_bytes)
    return framer.feed(pcm) + framer.flush()


def reframe(chunks: list[bytes]) -> list[bytes]:
    """Stored chunks of any size (`load_and_set_audio(..., chunk_size_ms=N)`) -> 20 ms frames, same samples.

    The padding of the last stored chunk is dropped before re-padding to a 20 ms boundary, so a fragment
    stored in 10, 15, 30 or 60 ms chunks plays sample for sample as the 20 ms one (the bridge's call takes
    20 ms frames only). Already 20 ms: the same list object back (no copy, no allocation).
    """
    size = FRAME_BYTES
    for chunk in chunks:
        if len(chunk) != size:
            break
    else:
        return chunks
    body = b"".join(chunks[:-1]) + bytes(chunks[-1]).rstrip(b"\x00") if chunks else b""
    return to_frames(body) if body else ([bytes(size)] if chunks else [])


# --- audio files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WavAudio:
    """An audio file (WAV, FLAC, OGG/Vorbis, ...) converted to 8 kHz mono s16le, with what it was."""

    path: str
    pcm: bytes
    source_rate: int
    source_width: int
    source_channels: int
    source_encoding: str = ""
    """libsndfile's container and encoding when not plain 16-bit PCM WAV, e.g. "FLAC 24-bit", "OGG Vorbis"."""

    @property
    def source_format(self) -> str:
        layout = {1: "mono", 2: "stereo"}.get(self.source_channels, f"{self.source_channels} channels")
        encoding = self.source_encoding or f"{self.source_width * 8}-bit"
        return f"{self.source_rate} Hz {encoding} {layout}"

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)


WAVE_FORMAT_NAMES: dict[int, str] = {
    0x0001: "PCM", 0x0002: "Microsoft ADPCM", 0x0003: "IEEE float", 0x0006: "A-law", 0x0007: "μ-law",
    0x0011: "IMA ADPCM", 0x0016: "ITU G.723 ADPCM", 0x0031: "GSM 6.10", 0x0040: "ITU G.721 ADPCM",
    0x0050: "MPEG audio", 0x0055: "MP3", 0x0064: "ITU G.726 ADPCM", 0x0065: "ITU G.722 ADPCM",
    0x0092: "Dolby AC-3 (S/PDIF)", 0x00FF: "AAC", 0x0161: "Windows Media Audio", 0x0162: "Windows Media Audio Pro",
    0x0163: "Windows Media Audio Lossless", 0x1610: "AAC (ADTS)", 0x2000: "Dolby AC-3", 0x2001: "DTS",
    0x0022: "DSP Group TrueSpeech", 0x0270: "Sony ATRAC3", 0xFFFE: "WAVE_FORMAT_EXTENSIBLE",
}
"""WAV format tags by name, so an unreadable WAV is reported as "MP3", not "unknown format: 85"."""

_WIDTHS = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
           "ULAW": 1, "ALAW": 1}
_INTEGER_SUBTYPES = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW"}


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
    return resample(data, rate)


def resample(pcm: bytes, rate: int) -> bytes:
    """Whole s16le mono at `rate` -> 8 kHz, band-limited (the streaming `Resampler`, fed and flushed)."""
    if rate == SAMPLE_RATE:
        return pcm
    resampler = Resampler(rate, realtime=False)
    return resampler.feed(pcm) + resampler.flush()


def read_audio(path: str | Path) -> WavAudio:
    """Read and convert an audio file libsndfile reads: every PCM WAV variant (EXTENSIBLE included), float
    WAV, A-law/μ-law/ADPCM WAV, FLAC, OGG/Vorbis, AIFF, ... Blocking: call it in a thread from async code.

    Raises AudioFormatError naming the file and the problem (missing, not audio, truncated, a format it
    cannot decode named by name, empty, ...). A truncated file is refused rather than loaded short.
    """
    name = str(path)
    file = Path(name)
    try:
        size = file.stat().st_size
        if file.is_dir():
            raise AudioFormatError(f"{name}: is a directory, not a WAV file")
        with open(name, "rb") as handle:
            head = handle.read(65536)
    except FileNotFoundError:
        raise AudioFormatError(f"{name}: no such file") from None
    except PermissionError:
        raise AudioFormatError(f"{name}: permission denied") from None
    if size == 0:
        raise AudioFormatError(f"{name}: empty file, not a WAV file")
    riff = _check_riff(name, head, size)
    try:
        with soundfile.SoundFile(name) as sound:
            rate, channels, subtype = sound.samplerate, sound.channels, sound.subtype
            container, declared = sound.format, sound.frames
            if channels not in (1, 2):
                raise AudioFormatError(f"{name}: {channels} channels; only mono and stereo are supported")
            if rate < 1000 or rate > 384000:
                raise AudioFormatError(f"{name}: implausible sample rate {rate} Hz")
            integer = subtype in _INTEGER_SUBTYPES
            data = sound.read(dtype="int32" if integer else "float32", always_2d=True)
    except AudioFormatError:
        raise
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        container = _container_by_magic(head)
        reason = _sndfile_reason(exc)
        if riff:
            problem = riff
        elif container:
            problem = f"truncated or damaged {container} file ({reason})"
        else:
            problem = f"not a usable WAV file, nor any audio format libsndfile reads ({reason})"
        raise AudioFormatError(f"{name}: {problem}") from None
    if riff:  # libsndfile read a RIFF file our own check refused (e.g. a truncated data chunk)
        raise AudioFormatError(f"{name}: {riff}")
    if len(data) < declared:
        raise AudioFormatError(f"{name}: truncated or damaged: the header promises {declared} samples, "
                               f"only {len(data)} could be decoded")
    if not len(data):
        raise AudioFormatError(f"{name}: contains no audio")
    if integer:  # left-justified 32-bit: keep the top 16 bits (what audioop.lin2lin did)
        mono = data[:, 0] if channels == 1 else data.astype(np.int64).sum(axis=1) // channels
        samples = (np.asarray(mono) >> 16).astype("<i2")
    else:
        floats = data[:, 0] if channels == 1 else data.mean(axis=1)
        samples = np.clip(np.rint(floats * 32768), -32768, 32767).astype("<i2")
    pcm = resample(samples.tobytes(), rate)
    width = _WIDTHS.get(subtype, 2)
    plain = container == "WAV" and subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32")
    encoding = "" if plain else _describe(container, subtype)
    return WavAudio(path=name, pcm=pcm, source_rate=rate, source_width=width, source_channels=channels,
                    source_encoding=encoding)


read_wav = read_audio
"""The old name: WAV was all it read."""


def _describe(container: str, subtype: str) -> str:
    kind = {"PCM_S8": "8-bit", "PCM_U8": "8-bit", "PCM_16": "16-bit", "PCM_24": "24-bit", "PCM_32": "32-bit",
            "FLOAT": "32-bit float", "DOUBLE": "64-bit float", "ULAW": "μ-law", "ALAW": "A-law",
            "VORBIS": "Vorbis", "OPUS": "Opus", "MPEG_LAYER_III": "MP3"}.get(subtype, subtype)
    return f"{container} {kind}" if container not in ("WAV", "WAVEX") else f"{kind}"


def _container_by_magic(head: bytes) -> str:
    """The container a file's first bytes announce ("FLAC", "OGG", "WAV", ...), or "" for none we know."""
    for magic, container in ((b"fLaC", "FLAC"), (b"OggS", "OGG"), (b"RIFF", "WAV"), (b"RF64", "WAV"),
                             (b"FORM", "AIFF"), (b"ID3", "MP3"), (b"caff", "CAF")):
        if head.startswith(magic):
            return container
    return ""


def _sndfile_reason(exc: BaseException) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if "Error opening" in text else text


def _check_riff(name: str, head: bytes, size: int) -> str | None:
    """Why a RIFF/WAVE file cannot be used (a truncated data chunk, an encoding named), or None.

    libsndfile quietly shortens a WAV whose data chunk runs past the end of the file, so the sizes are
    checked here. Not RIFF at all: None (libsndfile decides what it is).
    """
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        if head[:4] == b"RIFF" or (len(head) < 12 and b"RIFF".startswith(head[:4])):
            return "truncated or damaged WAV file (the RIFF header is incomplete)"
        return None
    offset, tag = 12, None
    while offset + 8 <= len(head):
        chunk, length = head[offset : offset + 4], int.from_bytes(head[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk == b"fmt " and body + 2 <= len(head):
            tag = int.from_bytes(head[body : body + 2], "little")
            if tag == 0xFFFE and length >= 26 and body + 26 <= len(head):
                tag = int.from_bytes(head[body + 24 : body + 26], "little")  # the sub-format GUID's tag
            if tag not in (0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031):  # what libsndfile decodes
                label = WAVE_FORMAT_NAMES.get(tag, "an unknown encoding")
                return (f"compressed or non-PCM WAV that cannot be decoded: {label} (format tag 0x{tag:04x}); "
                        "convert it to PCM, FLAC or OGG/Vorbis first")
        if chunk == b"data":
            if length in (0, 0xFFFFFFFF):
                return None  # length not recorded (written to a pipe): libsndfile reads to the end
            if body + length > size:
                return (f"truncated or damaged WAV file: the data chunk promises {length} bytes, "
                        f"the file holds {size - body}")
            return None
        offset = body + length + (length & 1)
    if offset + 8 > size:
        return "truncated or damaged WAV file (it ends before the audio data)"
    return None


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


# --- loudness ------------------------------------------------------------------------------------------

_GATE_ABS_DB = -50.0
"""Frames quieter than this are not speech (room tone, line noise): left out of the level."""
_GATE_REL_DB = -15.0
"""...and so are frames this far under the mean of the rest (breaths, tails): only active speech counts."""
PEAK_CEILING = 32767 * 10 ** (-1 / 20)
"""A gain never takes the measured audio's peak above -1 dBFS: levelling must not clip."""


def active_level_dbfs(pcm: bytes) -> float | None:
    """The active speech level of 8 kHz s16le audio, in dBFS (RMS / 32768: a full-scale sine is -3 dBFS).

    RMS over the 20 ms frames that carry sound, gated twice (in the manner of ITU-R BS.1770's gating):
    frames under -50 dBFS, then frames 15 dB under the mean of the rest, are left out, so pauses and
    trailing silence do not pull a fragment's level down. None when nothing is above the gate.
    """
    usable = len(pcm) - len(pcm) % FRAME_BYTES
    if not usable:
        usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
        if not usable:
            return None
    samples = np.frombuffer(pcm[:usable], dtype="<i2").astype(np.float64) / 32768
    frames = samples.reshape(-1, min(len(samples), FRAME_BYTES // SAMPLE_WIDTH))
    power = (frames * frames).mean(axis=1)
    loud = power[power > 10 ** (_GATE_ABS_DB / 10)]
    if not len(loud):
        return None
    active = loud[loud > loud.mean() * 10 ** (_GATE_REL_DB / 10)]
    return float(10 * np.log10(active.mean()))


def peak(pcm: bytes) -> int:
    """The largest absolute sample of s16le audio."""
    return audioop.max(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH], SAMPLE_WIDTH) if len(pcm) > 1 else 0


@dataclass(frozen=True)
class Loudness:
    """One target level for everything a caller hears (`AUDIO_TARGET_DBFS`), and how far a gain may go."""

    target_dbfs: float
    max_gain_db: float = 20.0
    """A near-silent recording is not boosted more than this (it would only bring up its noise)."""

    def gain_db(self, level_dbfs: float | None, peak_sample: int) -> float:
        """The gain taking audio at `level_dbfs` to the target, limited so the peak stays under -1 dBFS."""
        if level_dbfs is None:
            return 0.0
        gain = min(self.target_dbfs - level_dbfs, self.max_gain_db)
        if peak_sample > 0:
            gain = min(gain, 20 * math.log10(PEAK_CEILING / peak_sample))
        return gain


def apply_gain(pcm: bytes, gain_db: float) -> bytes:
    """s16le audio times a gain in dB (saturating at full scale rather than wrapping)."""
    if abs(gain_db) < 0.01:
        return pcm
    return audioop.mul(pcm, SAMPLE_WIDTH, 10 ** (gain_db / 20))


@dataclass(frozen=True)
class Levelled:
    pcm: bytes
    level_dbfs: float | None
    """The level measured before the gain (None: no active audio, left as it was)."""
    gain_db: float


def normalize(pcm: bytes, loudness: Loudness) -> Levelled:
    """Whole audio (a fragment) brought to the target level, measured over all of it."""
    level = active_level_dbfs(pcm)
    gain = loudness.gain_db(level, peak(pcm))
    return Levelled(apply_gain(pcm, gain), level, gain)


class StreamLeveller:
    """Frames in, the same frames at the target level out, for audio that arrives as a stream (TTS).

    The gain is measured once, on the stream's first part (`measure_ms` of active audio, or `hold_ms` of
    any audio, or the whole stream if it is shorter), and held for the rest: a gain that followed the audio
    would pump (raise pauses, duck stresses). The frames of that first part are held back until the gain is
    known; a TTS stream arrives faster than real time, so this costs at most a fraction of `measure_ms`.
    """

    def __init__(self, loudness: Loudness, *, measure_ms: int = 200, hold_ms: int = 500) -> None:
        self.loudness = loudness
        self._measure = max(1, measure_ms // FRAME_MS)
        self._hold = max(self._measure, hold_ms // FRAME_MS)
        self._held: list[bytes] = []
        self._active = 0
        self.gain_db: float | None = None
        """None until decided; then the gain every frame gets."""

    def feed(self, frames: list[bytes]) -> list[bytes]:
        if self.gain_db is not None:
            gain = self.gain_db
            return [apply_gain(frame, gain) for frame in frames] if gain else frames
        gate = 32768 * 10 ** (_GATE_ABS_DB / 20)
        for index, frame in enumerate(frames):
            self._held.append(frame)
            self._active += rms(frame) > gate
            if self._active >= self._measure or len(self._held) >= self._hold:
                # decided on exactly these frames, however the stream was cut: chunked equals whole
                return self._decide() + self.feed(frames[index + 1 :])
        return []

    def flush(self) -> list[bytes]:
        return self._decide() if self.gain_db is None else []

    def _decide(self) -> list[bytes]:
        held, self._held = self._held, []
        pcm = b"".join(held)
        self.gain_db = gain = round(self.loudness.gain_db(active_level_dbfs(pcm), peak(pcm)), 2)
        return [apply_gain(frame, gain) for frame in held] if gain else held
