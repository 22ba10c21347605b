#!/usr/bin/env python3
"""Regenerate the sample static fragments in bridge/data/fragments/ (a maintainer's tool, run by hand).

The WAV files are committed so that no machine needs a speech synthesiser at install or run time; this
script only documents and repeats how they were made. It needs `espeak-ng` (Russian voice `ru`) and
`sox` on PATH (Debian/Ubuntu: `apt-get install espeak-ng sox`):

    python bridge/sim/make_fragments.py            # all fragments
    python bridge/sim/make_fragments.py hello menu # only these stems

Each phrase is spoken by espeak-ng, then sox trims the leading and trailing silence (leaving a short
fade and 30/50 ms of silence), resamples to 8000 Hz, makes it mono 16-bit and normalises the peak to
-3 dBFS (`-G` guards the resampler against clipping; `-D`, no dither, keeps the output
byte-for-byte repeatable and the padding exactly silent). The result is plain PCM WAV, which
`voice-bridge load-audio` (and voice.audio.read_wav) reads without conversion.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "fragments"

# stem (fragment name `static:<stem>`) -> the phrase spoken. The sample dialogue and the bridge's
# fillers/fallback refer to these stems.
PHRASES: dict[str, str] = {
    "hello": "Здравствуйте!",
    "your_cost_is": "Ваша стоимость составляет...",
    "rubles": "...рублей",
    "menu": "Нажмите один, чтобы повторить, или ноль, чтобы завершить.",
    "goodbye": "До свидания!",
    "one_moment": "Минуточку...",
    "filler_tak": "Так-с...",
    "filler_aga": "Ага...",
    "fallback": "Извините, сейчас я не могу это произнести.",
}

VOICE = "ru"
WORDS_PER_MINUTE = 150  # a little slower than espeak's 175: clearer over a narrow-band phone line
PEAK_DBFS = -3
# sox `silence` arguments: cut until 30 ms above 0.5 % of full scale (done at both ends via `reverse`).
TRIM = ["silence", "1", "0.03", "0.5%"]
# After trimming: 5 ms fade-in and 15 ms fade-out (no click where the cut fell), then a short, known
# amount of silence at each end, so fragments played back to back sound spoken, not spliced.
# (A fade-in on the reversed audio is the fade-out: sox cannot place a fade-out on a stream of unknown
# length, which is what `silence` leaves.)
FADE_IN = ["fade", "q", "0.005"]
FADE_OUT_REVERSED = ["fade", "q", "0.015"]
PAD_S = ("0.03", "0.05")


def synthesize(text: str, raw_wav: Path) -> None:
    """espeak-ng -> a WAV at its native rate (22050 Hz)."""
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(raw_wav), text],
        check=True,
    )


def to_telephone_wav(raw_wav: Path, out_wav: Path) -> None:
    """Trim both ends, fade and pad them, resample to 8 kHz mono 16-bit, normalise the peak."""
    subprocess.run(
        [
            "sox", "-G", "-D", str(raw_wav), "-b", "16", "-c", "1", "-e", "signed-integer", str(out_wav),
            *TRIM, "reverse", *TRIM, *FADE_OUT_REVERSED, "reverse", *FADE_IN,
            "pad", *PAD_S,
            "rate", "-h", "8000",
            "norm", str(PEAK_DBFS),
        ],
        check=True,
    )


def make(stems: list[str], out_dir: Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for stem in stems:
            raw = Path(tmp) / f"{stem}.raw.wav"
            out = out_dir / f"{stem}.wav"
            synthesize(PHRASES[stem], raw)
            to_telephone_wav(raw, out)
            print(f"{out}  {out.stat().st_size} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stems", nargs="*", help=f"stems to regenerate (default: all of {', '.join(PHRASES)})")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output directory (default: {OUT_DIR})")
    args = parser.parse_args(argv)
    unknown = [s for s in args.stems if s not in PHRASES]
    if unknown:
        parser.error(f"unknown stem(s): {', '.join(unknown)}; known: {', '.join(PHRASES)}")
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        print(f"error: {' and '.join(missing)} not found on PATH (apt-get install espeak-ng sox)", file=sys.stderr)
        return 2
    make(args.stems or list(PHRASES), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
