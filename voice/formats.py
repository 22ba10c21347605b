"""The one table of provider output formats (ElevenLabs naming) the voice side accepts.

Why a module of its own: the settings (`ELEVENLABS_OUTPUT_FORMAT`'s choices), the codec (`voice.audio`) and
the emulator all need the same list; it used to be written twice and could drift. `voice.config` re-exports
these names for the modules that import them from there.
"""

from __future__ import annotations

PCM_RATES: dict[str, int] = {
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
}
"""Linear 16-bit little-endian mono formats and their sample rates (all but pcm_8000 are resampled)."""

G711_FORMATS: frozenset[str] = frozenset({"ulaw_8000", "alaw_8000"})
"""8 kHz G.711 formats, one byte a sample: decoded, never resampled."""

OUTPUT_FORMATS: tuple[str, ...] = tuple(PCM_RATES) + tuple(sorted(G711_FORMATS))
"""Every format a TTS stream may arrive in, in the order error messages list them."""

COMPRESSED_FORMATS: tuple[str, ...] = (
    "mp3_22050_32", "mp3_24000_48", "mp3_44100_32", "mp3_44100_64", "mp3_44100_96", "mp3_44100_128",
    "mp3_44100_192", "opus_48000_32", "opus_48000_64", "opus_48000_96", "opus_48000_128", "opus_48000_192",
)
"""Formats the provider also names (its API accepts them) that the voice side never decodes: the emulator
answers them with the real API's validation error or its own clear refusal, never as unknown."""


def source_rate(output_format: str) -> int:
    """Sample rate of a provider format (8000 for G.711); KeyError for an unknown one."""
    if output_format in G711_FORMATS:
        return 8000
    return PCM_RATES[output_format]


def bytes_per_sample(output_format: str) -> int:
    """2 for `pcm_*`, 1 for G.711; KeyError for an unknown format."""
    if output_format in G711_FORMATS:
        return 1
    PCM_RATES[output_format]
    return 2
