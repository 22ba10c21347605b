"""LLM text shaped for streamed speech: whole phrases out of token-sized pieces, and how many were heard.

The TTS WebSocket runs with `auto_mode=true`, which generates every message as it arrives and wants whole
phrases, while the first phrase must go out as soon as it is complete so the first audio never waits for
the whole answer. When a turn fails mid-answer, `phrases_heard` says where to resume without skipping words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["PhraseGrouper", "SAFE_CHARS_PER_S", "phrases_heard"]

# A sentence end, or a clause mark, followed by whitespace: where a phrase may end.
_BOUNDARY = re.compile(r"(?:(?P<sentence>[.!?…]+)|[,;:—–]+)[\"'»”)\]]*\s")
_SPACE = re.compile(r"\s")


class PhraseGrouper:
    """Groups LLM pieces into phrases for `auto_mode` TTS: each a whole phrase ending in a single space.

    A phrase ends at a sentence end followed by whitespace; at a clause mark (`,` `;` `:` dash) followed by
    whitespace when it is at least `min_clause` characters long (any length for the first phrase: the
    first audio comes sooner); and, without punctuation, at the last word boundary once `limit` characters
    (`first_limit` for the first phrase) are buffered. Whitespace inside a phrase is collapsed to one space.
    The phrases' words are exactly the input's words, in order.
    """

    def __init__(self, *, first_limit: int = 30, limit: int = 80, min_clause: int = 12) -> None:
        self.first_limit = first_limit
        self.limit = limit
        self.min_clause = min_clause
        self._buffer = ""
        self._first = True

    def feed(self, piece: str) -> list[str]:
        """The phrases completed by `piece` (often none)."""
        self._buffer += piece
        out: list[str] = []
        while (cut := self._cut()) is not None:
            phrase = _normalise(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            if phrase:
                out.append(phrase)
                self._first = False
        return out

    def flush(self) -> str | None:
        """The rest of the answer as a last phrase (None when nothing is left)."""
        phrase = _normalise(self._buffer)
        self._buffer = ""
        return phrase or None

    def _cut(self) -> int | None:
        buffer = self._buffer
        for match in _BOUNDARY.finditer(buffer):
            if match.group("sentence") or self._first or len(buffer[: match.end()].strip()) >= self.min_clause:
                return match.end()
        if len(buffer) >= (self.first_limit if self._first else self.limit):
            spaces = [m.end() for m in _SPACE.finditer(buffer)]
            words_before = [end for end in spaces if buffer[:end].strip()]
            if words_before:
                return words_before[-1]
        return None


def _normalise(text: str) -> str:
    words = text.split()
    return " ".join(words) + " " if words else ""


SAFE_CHARS_PER_S = 8.0
"""A slow speaking rate (speech runs at 12-17 characters a second). Judging received audio at this rate
underestimates how much text it covers, so a resumed answer may repeat a little but never skips words."""


def phrases_heard(phrases: Sequence[str], audio_s: float, chars_per_s: float = SAFE_CHARS_PER_S) -> int:
    """How many of `phrases` (sent in order on one TTS turn) the caller certainly heard in full, when the
    turn delivered `audio_s` seconds of audio before it failed.

    The WebSocket's audio does not say where one phrase's audio ends, so this is an estimate, made on the
    safe side: at `chars_per_s` (slow) the audio covers at most that many characters, and only the phrases
    that fit entirely count as heard.
    """
    budget = audio_s * chars_per_s
    used = 0
    heard = 0
    for phrase in phrases:
        used += len(phrase.strip())
        if used > budget:
            break
        heard += 1
    return heard
