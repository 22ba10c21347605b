"""Grouping LLM pieces into phrases for `auto_mode` TTS, and judging what a failed turn had said."""

from __future__ import annotations

import random

import pytest

from voice.emulators.llm import split_pieces
from voice.llm import PhraseGrouper, phrases_heard


def group(pieces: list[str], **kw) -> list[str]:
    grouper = PhraseGrouper(**kw)
    out = [phrase for piece in pieces for phrase in grouper.feed(piece)]
    tail = grouper.flush()
    return out + ([tail] if tail else [])


def test_openai_like_pieces_become_phrases_at_punctuation():
    text = "Здравствуйте, чем могу помочь? Ваш баланс 12500 рублей."
    assert group(split_pieces(text)) == ["Здравствуйте, ", "чем могу помочь? ", "Ваш баланс 12500 рублей. "]


def test_the_first_phrase_leaves_as_soon_as_it_is_complete():
    grouper = PhraseGrouper()
    assert grouper.feed("Да") == []
    assert grouper.feed(",") == []  # not followed by a space yet: "3,5" must not be split
    assert grouper.feed(" конечно") == ["Да, "]


def test_later_clauses_wait_until_they_are_long_enough():
    # a short clause is not worth a generation of its own after the first phrase; a sentence end always is
    assert group(["Хорошо. Да, ", "нет, может быть, ", "посмотрим. Всё."]) == [
        "Хорошо. ", "Да, нет, может быть, ", "посмотрим. ", "Всё. "]


def test_text_without_punctuation_is_cut_at_word_boundaries():
    words = ["слово"] * 40
    phrases = group([w + " " for w in words], first_limit=30, limit=80)
    assert all(p.endswith(" ") and not p.endswith("  ") for p in phrases)
    assert len(phrases[0]) <= 30 + len("слово ")
    assert all(len(p) <= 80 + len("слово ") for p in phrases)
    assert " ".join(phrases).split() == words


def test_a_long_piece_is_split_into_several_phrases_at_once():
    assert PhraseGrouper().feed("Раз. Два. Три. Четыре") == ["Раз. ", "Два. ", "Три. "]


def test_whitespace_is_normalised_and_empty_text_gives_nothing():
    assert group(["  Привет,\n\n", "  мир!  \t"]) == ["Привет, ", "мир! "]
    assert group(["", "   ", "\n"]) == []


@pytest.mark.parametrize("seed", range(20))
def test_phrases_keep_every_word_in_order_whatever_the_pieces(seed):
    rng = random.Random(seed)
    vocabulary = ["да", "нет,", "конечно.", "сумма", "12 500", "рублей!", "а", "почему?", "—", "итак:", "ok;"]
    text = " ".join(rng.choice(vocabulary) for _ in range(rng.randrange(1, 60)))
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randrange(0, 30))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    phrases = group(pieces)
    assert all(p.endswith(" ") and p.strip() and p == " ".join(p.split()) + " " for p in phrases)
    assert "".join(phrases).split() == text.split()


def test_phrases_heard_counts_only_what_the_audio_surely_covers():
    phrases = ["Добрый день, ", "ваш платёж принят. ", "Спасибо. "]  # 12, 18, 8 characters
    assert phrases_heard(phrases, 0.0) == 0
    assert phrases_heard(phrases, 1.0) == 0  # 8 characters at the safe rate: not the whole first phrase
    assert phrases_heard(phrases, 1.5) == 1  # 12
    assert phrases_heard(phrases, 3.7) == 1  # 29.6: the second phrase (up to 30) is not surely over
    assert phrases_heard(phrases, 3.75) == 2
    assert phrases_heard(phrases, 60.0) == 3
    # real speech runs faster than the safe rate, so the estimate errs towards repeating, never skipping
    real_rate = 14.0
    audio_of_two = sum(len(p.strip()) for p in phrases[:2]) / real_rate
    assert phrases_heard(phrases, audio_of_two) <= 2
