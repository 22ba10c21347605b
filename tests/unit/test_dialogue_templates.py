"""Templates: `{name}` placeholders, literal braces, and the guarantee that no raw placeholder is spoken."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.dialogue import Item, MissingVariable, render, template_variables


def test_render_fills_placeholders() -> None:
    assert render("Ваша стоимость {amount} рублей, {name}", {"amount": "12500", "name": "Анна"}) == (
        "Ваша стоимость 12500 рублей, Анна"
    )


def test_render_same_name_twice_and_adjacent() -> None:
    assert render("{a}{b}{a}", {"a": "1", "b": "2"}) == "121"


def test_missing_variable_names_the_variable() -> None:
    with pytest.raises(MissingVariable) as caught:
        render("{amount} рублей {currency}", {"amount": "5"})
    assert caught.value.name == "currency"
    assert "currency" in str(caught.value)
    assert isinstance(caught.value, LookupError)


def test_empty_value_is_a_value() -> None:
    assert render("[{x}]", {"x": ""}) == "[]"


def test_literal_braces() -> None:
    assert render("{{amount}} = {amount}, }}{{", {"amount": "7"}) == "{amount} = 7, }{"
    assert template_variables("{{amount}}") == frozenset()


def test_values_are_not_expanded_again() -> None:
    assert render("{a}", {"a": "{b}", "b": "no"}) == "{b}"


def test_template_without_placeholders() -> None:
    assert render("просто текст", {}) == "просто текст"
    assert render("", {}) == ""


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{", "unclosed '{'"),
        ("abc {amount", "unclosed '{' at character 5"),
        ("}", "single '}'"),
        ("{1abc}", "bad placeholder '{1abc}'"),
        ("{amount:>10}", "format specs"),
        ("{amount!r}", "format specs"),
        ("{a.b}", "bad placeholder '{a.b}'"),
        ("{a[0]}", "bad placeholder"),
        ("{ amount }", "bad placeholder"),
        ("{}", "empty placeholder"),
        ("{0}", "bad placeholder '{0}'"),
    ],
)
def test_malformed_templates_are_refused(template: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        render(template, {"amount": "1", "a": "1"})
    assert fragment in str(caught.value)
    assert not isinstance(caught.value, MissingVariable)


def test_item_variables() -> None:
    assert Item("tts", "{amount} и {name}").variables == {"amount", "name"}
    assert Item("llm", "Сумма {amount}. Ответь кратко.").variables == {"amount"}
    assert Item("static", "hello").variables == frozenset()
    assert Item("static", "cost", text="Стоимость {amount}").variables == {"amount"}


@given(st.text())
def test_doubled_braces_render_to_the_text_itself(text: str) -> None:
    escaped = text.replace("{", "{{").replace("}", "}}")
    assert render(escaped, {}) == text
    assert template_variables(escaped) == frozenset()


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(), min_size=1))
def test_rendering_only_placeholders_joins_values(values: dict[str, str]) -> None:
    template = " ".join("{" + name + "}" for name in values)
    assert render(template, values) == " ".join(values.values())
    assert template_variables(template) == set(values)
