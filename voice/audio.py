"""The one codec of the voice side: audio in any supported format -> 8 kHz mono s16le in 20 ms frames.

Audio is normalised where it enters (a TTS stream, a WAV file) and never again: the cache stores frames
ready to send. Streaming conversion keeps every piece of state between chunks (the odd byte of a split
sample, the resampler's filter state, a partial frame), so converting a stream chunk by chunk yields exactly
the bytes of converting it whole, wherever the chunk boundaries fall.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from voice.formats import G711_FORMATS, OUTPUT_FORMATS, PCM_RATES, bytes_per_sample

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

RESAMPLE_QUALITY = "HQ"
"""libsoxr's high quality: flat to 0.913 x Nyquist (3.65 kHz at 8 kHz out, so 300-3400 Hz within 0.01 dB),
stopband from Nyquist on, attenuation beyond the 16-bit noise floor. Measured: tests/tts/test_audio.py."""

_BLOCK_MS = 20
"""The resampler is fed in blocks of this much input whatever the provider's chunking, so the sequence of
libsoxr calls (and so every output sample) is the same however the stream was cut."""


class Resampler:
    """s16le mono at `rate` -> s16le mono at 8 kHz, chunk by chunk, band-limited (libsoxr).

    `audioop.ratecv` had no anti-alias filter: a 6 kHz tone at 16 kHz came out as a full-level 2 kHz tone.
    libsoxr's streaming resampler keeps its filter state across chunks; feeding it fixed blocks makes
    chunked conversion byte-equal to whole conversion. It emits output in bursts of about 100 ms, and the
    last ~100 ms of a stream only with `flush()`: latency a caller does not notice on a stream that arrives
    faster than real time (every TTS stream does). 8 kHz input passes through untouched.
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise AudioFormatError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._odd = b""
        self._pending = bytearray()
        self._block = max(1, rate * _BLOCK_MS // 1000) * SAMPLE_WIDTH
        self._soxr: soxr.ResampleStream | None = None
        if rate != SAMPLE_RATE:
            # float32, not int16: libsoxr dithers int16 output at random, so the same input would not give
            # the same bytes twice; the one rounding to 16 bits is done here instead (`_s16le`).
            self._soxr = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def feed(self, data: bytes) -> bytes:
        if self._soxr is None:
            if self._odd:
                data = self._odd + data
                self._odd = b""
            if len(data) % 2:
                self._odd = data[-1:]
                data = data[:-1]
            return data
        pending = self._pending
        pending += data
        whole = len(pending) // self._block * self._block
        if not whole:
            return b""
        samples = _samples(bytes(pending[:whole]))
        del pending[:whole]
        step = self._block // SAMPLE_WIDTH
        stream = self._soxr
        return b"".join(_s16le(stream.resample_chunk(samples[i : i + step])) for i in range(0, len(samples), step))

    def flush(self) -> bytes:
        """The filter's tail; the stream can then start again. A dangling half sample is dropped: not audio."""
        self._odd = b""
        if self._soxr is None:
            return b""
        pending = self._pending
        rest = bytes(pending[: len(pending) - len(pending) % SAMPLE_WIDTH])
        pending.clear()
        out = _s16le(self._soxr.resample_chunk(_samples(rest), last=True))
        self._soxr.clear()
        return out


def _samples(data: bytes) -> np.ndarray:
    """s16le bytes -> float32 samples in [-1, 1) (what the resampler works on)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)


def _s16le(samples: np.ndarray) -> bytes:
    """float samples -> s16le bytes, rounded to the nearest step and clipped at full scale."""
    scaled = np.rint(samples * np.float32(32768))
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


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


AudioFile = WavAudio

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
    resampler = Resampler(rate)
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
            if tag not in (0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0064):
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
