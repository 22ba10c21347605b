"""Loading dialogue files: the sample, the DESIGN.md example, and every kind of invalid file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bridge.dialogue import (
    Dialogue,
    DialogueError,
    Item,
    Node,
    default_dialogue_path,
    load_dialogue,
    parse_dialogue,
)

# The example of DESIGN.md's "Dialogue map (TOML)" section, verbatim.
DESIGN_EXAMPLE = """\
start = "greeting"

[vars]                       # defaults; call:<uuid> in Redis overrides them
amount = "12500"

[nodes.greeting]
play = [ { static = "intro" }, { tts = "{amount}" }, { static = "currency" } ]
barge_in = true              # caller speech or a digit stops the prompt
dtmf = { "1" = "greeting", "0" = "goodbye" }
timeout_s = 5                # wait this long for a digit after the playlist
next = "goodbye"             # where to go on timeout

[nodes.goodbye]
play = [ { static = "bye" } ]
hangup = true
"""


def invalid(text: str, source: str = "dialogue.toml") -> DialogueError:
    with pytest.raises(DialogueError) as caught:
        parse_dialogue(text, source)
    error = caught.value
    assert str(error).splitlines() == [f"{source}: {p}" for p in error.problems]
    return error


def with_greeting(greeting: str, extra: str = "") -> str:
    """A dialogue whose only questionable part is the greeting node (and `extra` tables)."""
    return (f'start = "greeting"\n[nodes.greeting]\n{greeting}\n'
            f'[nodes.goodbye]\nplay = [ {{ static = "bye" }} ]\nhangup = true\n{extra}')


# --- valid files ----------------------------------------------------------------------------------------


def test_design_example_parses_to_the_expected_model() -> None:
    dialogue = parse_dialogue(DESIGN_EXAMPLE)
    assert dialogue == Dialogue(
        start="greeting",
        vars={"amount": "12500"},
        nodes={
            "greeting": Node(
                name="greeting",
                play=(Item("static", "intro"), Item("tts", "{amount}"), Item("static", "currency")),
                barge_in=True,
                dtmf={"1": "greeting", "0": "goodbye"},
                timeout_s=5.0,
                next="goodbye",
                hangup=False,
            ),
            "goodbye": Node(name="goodbye", play=(Item("static", "bye"),), hangup=True),
        },
        source="<string>",
    )
    assert isinstance(dialogue.nodes["greeting"].timeout_s, float)
    assert dialogue.variables == {"amount"}
    assert not dialogue.uses_llm


def test_sample_dialogue_ships_with_the_package_and_loads() -> None:
    path = default_dialogue_path()
    assert path.is_file()
    assert path.parent.name == "data" and path.parent.parent.name == "bridge"
    dialogue = load_dialogue(path)
    assert dialogue.source == str(path)
    assert dialogue.start == "greeting"
    assert dialogue.vars == {"amount": "12500"}
    greeting, goodbye = dialogue.nodes["greeting"], dialogue.nodes["goodbye"]
    assert [(i.kind, i.value) for i in greeting.play] == [
        ("static", "hello"), ("static", "your_cost_is"), ("tts", "{amount}"), ("static", "rubles"),
        ("static", "menu"),
    ]
    assert all(i.text for i in greeting.play if i.kind == "static")  # every fragment has a spoken fallback
    assert greeting.barge_in is True
    assert greeting.dtmf == {"1": "greeting", "0": "goodbye"}
    assert (greeting.timeout_s, greeting.next, greeting.hangup) == (5.0, "goodbye", False)
    assert [(i.kind, i.value) for i in goodbye.play] == [("static", "goodbye")]
    assert goodbye.hangup is True and goodbye.next is None and not goodbye.dtmf
    assert set(dialogue.nodes) == {"greeting", "goodbye"}


def test_defaults_of_omitted_keys() -> None:
    dialogue = parse_dialogue('start = "a"\n[nodes.a]\ndtmf = { "#" = "a" }\n')
    node = dialogue.nodes["a"]
    assert node == Node(name="a", play=(), barge_in=False, dtmf={"#": "a"}, timeout_s=None, next=None,
                        hangup=False)
    assert dialogue.vars == {}


def test_integer_vars_become_strings() -> None:
    dialogue = parse_dialogue(with_greeting('play = [ { tts = "{n}" } ]\nnext = "goodbye"', '[vars]\nn = 42\n'))
    assert dialogue.vars == {"n": "42"}


def test_static_text_fallback_and_llm_items() -> None:
    dialogue = parse_dialogue(with_greeting(
        'play = [ { static = "cost", text = "Стоимость {amount}" }, { llm = "Поясни сумму {amount}" } ]\n'
        'next = "goodbye"'))
    assert dialogue.nodes["greeting"].play == (Item("static", "cost", text="Стоимость {amount}"),
                                               Item("llm", "Поясни сумму {amount}"))
    assert dialogue.uses_llm
    assert dialogue.variables == {"amount"}


def test_all_dtmf_digits_and_node_shapes_accepted() -> None:
    digits = "0123456789*#ABCD"
    table = ", ".join(f'"{d}" = "menu"' for d in digits)
    dialogue = parse_dialogue(f"""
start = "menu"
[nodes.menu]
play = [ {{ static = "menu" }} ]
dtmf = {{ {table} }}
timeout_s = 2.5
next = "pause"
[nodes.pause]             # silence, then on
timeout_s = 1
next = "chain"
[nodes.chain]             # play, then straight on
play = [ {{ static = "x" }} ]
next = "wait"
[nodes.wait]              # wait for a digit forever
dtmf = {{ "0" = "bye" }}
[nodes.bye]               # hang up without a word
hangup = true
""")
    assert set(dialogue.nodes["menu"].dtmf) == set(digits)
    assert dialogue.nodes["menu"].timeout_s == 2.5


def test_model_is_immutable() -> None:
    dialogue = parse_dialogue(DESIGN_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dialogue.start = "goodbye"  # type: ignore[misc]
    with pytest.raises(TypeError):
        dialogue.nodes["x"] = dialogue.nodes["greeting"]  # type: ignore[index]
    with pytest.raises(TypeError):
        dialogue.vars["amount"] = "1"  # type: ignore[index]
    with pytest.raises(TypeError):
        dialogue.nodes["greeting"].dtmf["5"] = "goodbye"  # type: ignore[index]


# --- files that cannot be read or parsed ----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(DialogueError) as caught:
        load_dialogue(path)
    assert str(caught.value).startswith(f"{path}: cannot read the file")
    assert caught.value.source == str(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cp1251.toml"
    path.write_bytes('start = "привет"\n'.encode("cp1251"))
    with pytest.raises(DialogueError, match="not UTF-8"):
        load_dialogue(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + DESIGN_EXAMPLE.encode())
    assert load_dialogue(path).start == "greeting"


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('start = "greeting"\n\n[nodes.greeting]\ntimeout_s = five\n', encoding="utf-8")
    with pytest.raises(DialogueError) as caught:
        load_dialogue(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid TOML:")
    assert "line 4" in message and "column" in message


# --- validation: each problem is named, with its node and item ------------------------------------------

CASES = [
    pytest.param("[nodes.a]\nhangup = true\n", ["start: missing"], id="missing start"),
    pytest.param("start = 3\n[nodes.a]\nhangup = true\n", ["start: must be a node name"], id="start not a string"),
    pytest.param(
        'start = "greting"\n[nodes.greeting]\nhangup = true\n',
        ["start: 'greting' is not a node (did you mean 'greeting'?)"],
        id="start not a node",
    ),
    pytest.param('start = "a"\n', ["nodes: no nodes"], id="no nodes"),
    pytest.param('start = "a"\nnodes = 5\n', ["nodes: must be a table"], id="nodes not a table"),
    pytest.param('start = "a"\n[nodes]\na = "x"\n', ["node 'a': must be a table"], id="node not a table"),
    pytest.param(
        with_greeting('play = []\nnext = "goodbye"\ndtmf = { "1" = "gretting" }\ntimeout_s = 1'),
        ["node 'greeting': dtmf '1' goes to unknown node 'gretting' (did you mean 'greeting'?)"],
        id="dtmf to unknown node",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nnext = "godbye"'),
        ["node 'greeting': next goes to unknown node 'godbye' (did you mean 'goodbye'?)"],
        id="next to unknown node",
    ),
    pytest.param(
        with_greeting('dtmf = { "e" = "goodbye", "a" = "goodbye", "11" = "goodbye", "0" = "goodbye" }'),
        [
            "node 'greeting': dtmf key 'e' is not a DTMF digit",
            "node 'greeting': dtmf key 'a' is not a DTMF digit (did you mean 'A'?)",
            "node 'greeting': dtmf key '11' is not a DTMF digit",
        ],
        id="bad dtmf digits",
    ),
    pytest.param(
        with_greeting('dtmf = { "1" = 2, "0" = "goodbye" }'),
        ["node 'greeting': dtmf '1' must name a node (a string), got the integer 2"],
        id="dtmf target type",
    ),
    pytest.param(with_greeting('dtmf = "1"\n'), ["node 'greeting': dtmf must be a table"], id="dtmf not a table"),
    pytest.param(
        with_greeting('play = [ { stattic = "a" } ]\nnext = "goodbye"'),
        [
            "node 'greeting': play item 1: unknown key 'stattic' (did you mean 'static'?)",
            "node 'greeting': play item 1: no kind",
        ],
        id="unknown item kind",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" }, { static = "a", tts = "b" } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 2: several kinds in one item (static, tts)"],
        id="several kinds",
    ),
    pytest.param(
        with_greeting('play = [ "hello" ]\nnext = "goodbye"'),
        ["node 'greeting': play item 1: must be a table like { static = \"hello\" }"],
        id="item not a table",
    ),
    pytest.param(
        with_greeting('play = [ { static = "" }, { tts = 5 } ]\nnext = "goodbye"'),
        [
            "node 'greeting': play item 1: static must be a non-empty string",
            "node 'greeting': play item 2: tts must be a non-empty string, got the integer 5",
        ],
        id="empty or non-string item value",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a{x}" }, { static = " b" } ]\nnext = "goodbye"'),
        [
            "node 'greeting': play item 1: static fragment name 'a{x}' has braces",
            "node 'greeting': play item 2: static fragment name ' b' has spaces",
        ],
        id="bad fragment names",
    ),
    pytest.param(
        with_greeting('play = [ { tts = "x", text = "y" } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 1: text is only for static items"],
        id="text on tts",
    ),
    pytest.param(
        with_greeting('play = [ { static = "x", text = 1 } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 1: text must be a non-empty string"],
        id="text type",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" }, { tts = "{1abc}" } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 2 (tts): template '{1abc}': bad placeholder"],
        id="bad name in template",
    ),
    pytest.param(
        with_greeting('play = [ { llm = "Answer {" } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 1 (llm): template 'Answer {': unclosed '{'"],
        id="unclosed brace",
    ),
    pytest.param(
        with_greeting('play = [ { tts = "{amount:,}" } ]\nnext = "goodbye"'),
        [
            "node 'greeting': play item 1 (tts): template '{amount:,}': bad placeholder '{amount:,}' "
            "at character 1: format specs"
        ],
        id="format spec",
    ),
    pytest.param(
        with_greeting('play = [ { static = "c", text = "cost {}" } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 1 (static text): template 'cost {}': empty placeholder"],
        id="bad static text template",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nbarge-in = true\ntimeout = 5\nnext = "goodbye"'),
        [
            "node 'greeting': unknown key 'barge-in' (did you mean 'barge_in'?)",
            "node 'greeting': unknown key 'timeout' (did you mean 'timeout_s'?)",
        ],
        id="typo keys in node",
    ),
    pytest.param(
        'strat = "a"\nstart = "a"\n[nodes.a]\nhangup = true\n',
        ["top level: unknown key 'strat' (did you mean 'start'?)"],
        id="typo key at top level",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a", txt = "x" } ]\nnext = "goodbye"'),
        ["node 'greeting': play item 1: unknown key 'txt' (did you mean 'text'?)"],
        id="typo key in item",
    ),
    pytest.param(
        with_greeting('play = { static = "a" }\nnext = "goodbye"'),
        ["node 'greeting': play must be a list"],
        id="play not a list",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\ndtmf = { "1" = "goodbye" }\ntimeout_s = 0\nnext = "goodbye"'),
        ["node 'greeting': timeout_s must be a positive number of seconds, got the integer 0"],
        id="timeout zero",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\ndtmf = { "1" = "goodbye" }\ntimeout_s = "5"\nnext = "goodbye"'),
        ["node 'greeting': timeout_s must be a positive number of seconds, got the string '5'"],
        id="timeout string",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\ndtmf = { "1" = "goodbye" }\ntimeout_s = inf\nnext = "goodbye"'),
        ["node 'greeting': timeout_s must be a positive number"],
        id="timeout infinite",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\ntimeout_s = true\nnext = "goodbye"'),
        ["node 'greeting': timeout_s must be a positive number of seconds, got true/false"],
        id="timeout bool",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nnext = "goodbye"\nbarge_in = "yes"'),
        ["node 'greeting': barge_in must be true or false, got the string 'yes'"],
        id="barge_in type",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nnext = "goodbye"', "[nodes.x]\nhangup = 1\n"),
        ["node 'x': hangup must be true or false, got the integer 1", "node 'x': unreachable"],
        id="hangup type",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nnext = 7'),
        ["node 'greeting': next must be a node name (a string)"],
        id="next type",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nhangup = true\ndtmf = { "1" = "goodbye" }\nnext = "goodbye"'),
        ["node 'greeting': hangup = true ends the call after the playlist, so dtmf, next would never be used"],
        id="hangup with dtmf and next",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\ntimeout_s = 3\ndtmf = { "1" = "goodbye" }'),
        ["node 'greeting': timeout_s needs next"],
        id="timeout without next",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\ndtmf = { "1" = "goodbye" }\nnext = "goodbye"'),
        ["node 'greeting': has dtmf and next but no timeout_s"],
        id="dtmf and next without timeout",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]', "[nodes.x]\nhangup = true\n"),
        [
            "node 'greeting': the call would stay in silence forever after this playlist",
            "node 'goodbye': unreachable",
            "node 'x': unreachable",
        ],
        id="dead end",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nnext = "empty"', "[nodes.empty]\n"),
        ["node 'empty': empty node: nothing to play and nowhere to go", "node 'goodbye': unreachable"],
        id="empty node",
    ),
    pytest.param(
        with_greeting('play = []\nnext = "goodbye"'),
        ["node 'greeting': plays nothing and waits for nothing"],
        id="empty playlist with only next",
    ),
    pytest.param(
        with_greeting(
            'play = [ { static = "a" } ]\nnext = "goodbye"',
            '[nodes.orphan]\nhangup = true\n[nodes.island]\nnext = "orphan"\ntimeout_s = 1\n',
        ),
        ["node 'orphan': unreachable: no dtmf or next leads to it from start 'greeting'", "node 'island': unreachable"],
        id="unreachable nodes",
    ),
    pytest.param(
        with_greeting(
            'play = [ { static = "a" } ]\nnext = "goodbye"', '[vars]\nrate = 3.5\nok = "x"\nflag = true\nlist = [1]\n'
        ),
        [
            "vars.rate: must be a string (or a whole number), got the number 3.5; put it in quotes",
            "vars.flag: must be a string",
            "vars.list: must be a string",
        ],
        id="vars types",
    ),
    pytest.param(
        with_greeting('play = [ { static = "a" } ]\nnext = "goodbye"', '[vars]\n"bad-name" = "x"\n"2x" = "y"\n'),
        ["vars.bad-name: not a valid variable name", "vars.2x: not a valid variable name"],
        id="vars names",
    ),
    pytest.param(
        'vars = "amount"\n' + with_greeting('play = [ { static = "a" } ]\nnext = "goodbye"'),
        ["vars: must be a table"],
        id="vars not a table",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_invalid_dialogue_names_node_and_problem(text: str, expected: list[str]) -> None:
    error = invalid(text)
    assert len(error.problems) == len(expected), str(error)
    for fragment, problem in zip(expected, error.problems, strict=True):
        assert problem.startswith(fragment), f"{problem!r} does not start with {fragment!r}"


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text(with_greeting(
        'play = [ { tts = "{x" }, { static = "a", llm = "b" } ]\nbarge-in = true\ndtmf = { "x" = "goodbye" }\n'
        'next = "nowhere"\ntimeout_s = -2'), encoding="utf-8")
    with pytest.raises(DialogueError) as caught:
        load_dialogue(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: node 'greeting': ") for line in lines), lines
    joined = "\n".join(lines)
    for fragment in ("play item 1 (tts): template '{x'", "play item 2: several kinds", "unknown key 'barge-in'",
                     "dtmf key 'x'", "timeout_s must be a positive", "next goes to unknown node 'nowhere'"):
        assert fragment in joined
    assert len(lines) == 6


def test_dialogue_error_is_a_value_error() -> None:
    assert issubclass(DialogueError, ValueError)
    error = invalid('start = "a"\n', source="/etc/x.toml")
    assert error.source == "/etc/x.toml"
    assert str(error) == "/etc/x.toml: nodes: no nodes: add at least one [nodes.<name>] table"
