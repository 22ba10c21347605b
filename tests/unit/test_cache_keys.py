"""The one key builder: shapes, the TTS voice profile in every TTS key, hashing of long texts, validation."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest
from pydantic import SecretStr

from voice import keys
from voice.config import TTSConfig

TAG = re.compile(r"^[0-9a-f]{12}$")


def test_static_key_is_static_colon_name():
    assert keys.static_key("welcome") == "static:welcome"
    assert keys.static_key("Добрый день") == "static:Добрый день"


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "tab\there", "nul\x00"])
def test_static_key_rejects_empty_and_control_characters(bad):
    with pytest.raises(ValueError, match="static fragment name"):
        keys.static_key(bad)


def test_static_key_rejects_non_strings():
    with pytest.raises(TypeError):
        keys.static_key(None)  # type: ignore[arg-type]


def test_tts_key_shape_keeps_the_text_readable():
    config = TTSConfig()
    key = keys.tts_key("12500", config)
    prefix, tag, text = key.split(":", 2)
    assert (prefix, text) == ("tts", "12500")
    assert TAG.match(tag)
    assert tag == keys.profile_tag(config)


def test_tts_key_from_a_precomputed_tag_equals_the_one_from_the_config():
    config = TTSConfig(voice_id="abc")
    assert keys.tts_key("двенадцать", keys.profile_tag(config)) == keys.tts_key("двенадцать", config)


def test_profile_tag_is_stable_across_equal_configs():
    a = TTSConfig(voice_settings={"stability": 0.5, "similarity_boost": 0.8})
    b = TTSConfig(voice_settings={"similarity_boost": 0.8, "stability": 0.5})  # other order, same settings
    assert keys.profile_tag(a) == keys.profile_tag(b)


@pytest.mark.parametrize(
    "change",
    [
        {"voice_id": "another-voice"},
        {"model_id": "eleven_multilingual_v2"},
        {"output_format": "ulaw_8000"},
        {"voice_settings": {"stability": 0.3}},
    ],
)
def test_every_sound_affecting_setting_changes_the_tts_key(change):
    base = TTSConfig()
    changed = base.model_copy(update=change)
    assert keys.tts_key("12500", changed) != keys.tts_key("12500", base)


@pytest.mark.parametrize(
    "change",
    [{"api_key": SecretStr("secret")}, {"base_url": "http://127.0.0.1:9"}, {"read_timeout_s": 1.0}, {"max_retries": 0}],
)
def test_operational_settings_do_not_change_the_tts_key(change):
    base = TTSConfig()
    assert keys.tts_key("12500", base.model_copy(update=change)) == keys.tts_key("12500", base)


def test_texts_up_to_the_limit_stay_verbatim_longer_ones_are_hashed():
    tag = keys.profile_tag(TTSConfig())
    short = "x" * keys.MAX_TEXT_IN_KEY
    long = "y" * (keys.MAX_TEXT_IN_KEY + 1)
    assert keys.tts_key(short, tag) == f"tts:{tag}:{short}"
    expected_hash = hashlib.sha256(long.encode("utf-8")).hexdigest()
    assert keys.tts_key(long, tag) == f"tts:{tag}:#{expected_hash}"
    # the hashed form is longer than any verbatim text, so the two can never collide
    assert len("#" + expected_hash) > keys.MAX_TEXT_IN_KEY


def test_long_texts_differing_in_one_character_get_different_keys():
    tag = keys.profile_tag(TTSConfig())
    text = "Ваш платёж на сумму двенадцать тысяч пятьсот рублей поступил на счёт " * 2
    assert keys.tts_key(text + "1", tag) != keys.tts_key(text + "2", tag)


def test_tts_text_is_not_normalised():
    tag = keys.profile_tag(TTSConfig())
    assert keys.tts_key("12500", tag) != keys.tts_key("12500 ", tag)


@pytest.mark.parametrize("bad", ["", "  "])
def test_tts_key_rejects_empty_text(bad):
    with pytest.raises(ValueError, match="TTS text"):
        keys.tts_key(bad, TTSConfig())


@pytest.mark.parametrize("bad_tag", ["", "xyz", "ABCDEF123456", "0123456789abc", None])
def test_tts_key_rejects_a_tag_not_made_by_profile_tag(bad_tag):
    with pytest.raises(ValueError, match="profile tag"):
        keys.tts_key("12500", bad_tag)  # type: ignore[arg-type]


def test_is_tts_key():
    assert keys.is_tts_key(keys.tts_key("1", TTSConfig()))
    assert not keys.is_tts_key(keys.static_key("tts"))
    assert not keys.is_tts_key(keys.summary_key("tts:x"))


def test_call_vars_key_uses_the_canonical_uuid():
    value = uuid.UUID("0123456789abcdef0123456789abcdef")
    expected = "call:01234567-89ab-cdef-0123-456789abcdef"
    assert keys.call_vars_key(value) == expected
    assert keys.call_vars_key(str(value)) == expected
    assert keys.call_vars_key(str(value).upper()) == expected


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "call:1", None])
def test_call_vars_key_rejects_what_is_not_a_uuid(bad):
    with pytest.raises(ValueError, match="not a call UUID"):
        keys.call_vars_key(bad)  # type: ignore[arg-type]


def test_summary_key():
    assert keys.summary_key("session-42") == "summary:session-42"
    with pytest.raises(ValueError, match="session id"):
        keys.summary_key("")
