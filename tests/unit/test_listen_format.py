"""The listening keys of the dialogue format: parsing, validation messages, normalisation and routing."""

from __future__ import annotations

import pytest

from bridge.dialogue import DialogueError, Listen, normalise_transcript, parse_dialogue

ASK = """
start = "ask"
[nodes.ask]
play = [ { tts = "Вы подтверждаете платёж?" } ]
listen = { into = "reply", timeout_s = 4, max_s = 10 }
routes = { "да|yes|конечно" = "confirm", "нет|no" = "decline" }
dtmf = { "1" = "confirm", "2" = "decline" }
no_input = "again"
no_match = "sorry"
[nodes.again]
play = [ { tts = "Я вас не слышу." } ]
hangup = true
[nodes.sorry]
play = [ { tts = "Вы сказали: {reply}." } ]
hangup = true
[nodes.confirm]
play = [ { tts = "Подтверждено." } ]
hangup = true
[nodes.decline]
play = [ { tts = "Отменено." } ]
hangup = true
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DialogueError) as caught:
        parse_dialogue(text, "d.toml")
    return list(caught.value.problems)


def test_a_listening_node_is_parsed_with_its_routes_and_targets():
    dialogue = parse_dialogue(ASK)
    node = dialogue.nodes["ask"]
    assert node.listen == Listen(into="reply", timeout_s=4.0, max_s=10.0)
    assert [(r.pattern, r.target) for r in node.routes] == [("да|yes|конечно", "confirm"), ("нет|no", "decline")]
    assert (node.no_input, node.no_match) == ("again", "sorry")
    assert dict(node.dtmf) == {"1": "confirm", "2": "decline"}
    assert dialogue.listens and dialogue.heard_variables == {"reply"}


def test_listen_defaults():
    dialogue = parse_dialogue('start = "a"\n[nodes.a]\nlisten = {}\nnext = "a"\n')
    assert dialogue.nodes["a"].listen == Listen("reply", 6.0, 15.0)


@pytest.mark.parametrize(("said", "expected"), [
    ("Да.", "да"), ("  ДА,   конечно! ", "да конечно"), ("Всё хорошо", "все хорошо"), ("Yes - sure?", "yes sure"),
])
def test_normalisation(said, expected):
    assert normalise_transcript(said) == expected


@pytest.mark.parametrize(("said", "target", "outcome"), [
    ("Да, конечно.", "confirm", "route"),
    ("YES", "confirm", "route"),
    ("Нет, спасибо", "decline", "route"),
    ("когда?", "sorry", "no_match"),  # "да" must be a whole word
    ("может быть", "sorry", "no_match"),
    ("", "sorry", "no_match"),  # speech nobody could read
    (None, "again", "no_input"),
])
def test_spoken_routes(said, target, outcome):
    choice = parse_dialogue(ASK).nodes["ask"].choose(said)
    assert (choice.target, choice.outcome) == (target, outcome)


def test_the_first_matching_route_wins_and_yo_in_a_pattern_is_e():
    text = ASK.replace('routes = { "да|yes|конечно" = "confirm", "нет|no" = "decline" }',
                       'routes = { "всё" = "confirm", "нет|да" = "decline" }')
    node = parse_dialogue(text).nodes["ask"]
    assert node.choose("Да, всё верно").target == "confirm"
    assert node.choose("Все.").target == "confirm"


def test_without_routes_any_answer_goes_next_and_silence_to_no_input():
    node = parse_dialogue("""
start = "chat"
[nodes.chat]
play = [ { llm = "{reply}" } ]
listen = { into = "reply" }
next = "chat"
no_input = "bye"
[nodes.bye]
play = [ { static = "goodbye" } ]
hangup = true
""").nodes["chat"]
    assert (node.choose("что угодно").target, node.choose("что угодно").outcome) == ("chat", "next")
    assert node.choose(None).target == "bye"
    assert node.choose("").target == "bye"  # no no_match: unreadable speech is no input


def test_errors_name_the_file_the_node_and_the_key():
    bad = ASK.replace('listen = { into = "reply", timeout_s = 4, max_s = 10 }',
                      'listen = { into = "2x", timeout_s = -1, max = 10 }')
    bad = bad.replace('"нет|no" = "decline"', '"нет|(no" = "decline", "ok" = "nowhere"')
    found = problems(bad)
    assert any("node 'ask': listen: unknown key 'max' (did you mean 'max_s'?)" in p for p in found), found
    assert any("node 'ask': listen.into must be a variable name" in p for p in found), found
    assert any("node 'ask': listen.timeout_s must be a positive number of seconds, got the integer -1" in p
               for p in found), found
    assert any("node 'ask': routes 'нет|(no' is not a valid regular expression" in p for p in found), found
    assert any("node 'ask': routes 'ok' goes to unknown node 'nowhere'" in p for p in found), found
    with pytest.raises(DialogueError, match=r"^d\.toml: node 'ask'"):
        parse_dialogue(bad, "d.toml")


@pytest.mark.parametrize(("body", "message"), [
    ('routes = { "да" = "b" }\nnext = "b"', "routes needs listen"),
    ('no_input = "b"\nnext = "b"\nplay = [ { static = "x" } ]', "no_input needs listen"),
    ('listen = {}\nroutes = { "да" = "b" }\nno_input = "b"', "routes need no_match or next"),
    ('listen = {}\nno_match = "b"', "listen needs no_input or next"),
    ('listen = {}\nno_input = "b"', "listen without routes needs next"),
    ('listen = {}\nnext = "b"\ntimeout_s = 3', "remove timeout_s"),
    ('listen = "yes"\nnext = "b"', "listen must be a table"),
    ('listen = {}\nnext = "b"\nno_match = 3', "no_match must be a node name (a string), got the integer 3"),
])
def test_listening_shape_problems(body, message):
    text = f'start = "a"\n[nodes.a]\n{body}\n[nodes.b]\nplay = [ {{ static = "x" }} ]\nhangup = true\n'
    found = problems(text)
    assert any(message in p for p in found), found


def test_spoken_targets_make_nodes_reachable():
    dialogue = parse_dialogue(ASK)  # again/sorry/confirm/decline are reached by speech (and digits) only
    assert set(dialogue.nodes) == {"ask", "again", "sorry", "confirm", "decline"}
    only_spoken = ASK.replace('dtmf = { "1" = "confirm", "2" = "decline" }\n', "")
    assert parse_dialogue(only_spoken).nodes["decline"].name == "decline"


def test_the_documented_spoken_dialogues_load():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = 0
    for name in ("README.md", "docs/dialogues.md"):
        text = (root / name).read_text(encoding="utf-8")
        for block in re.findall(r"```toml\n(.*?)```", text, re.S):
            if block.startswith("start") and "listen" in block:
                assert parse_dialogue(block, name).listens
                found += 1
    assert found >= 2


async def test_check_warns_when_the_dialogue_listens_without_a_recognizer():
    from bridge.preflight import ListeningCheck
    from voice.stt import STTConfig

    dialogue = parse_dialogue(ASK)
    warned = await ListeningCheck(dialogue, STTConfig()).run()
    assert warned.status == "warn" and "nodes ask listen, but STT_PROVIDER=none" in warned.detail
    assert "STT_PROVIDER=elevenlabs" in warned.remedy
    fine = await ListeningCheck(dialogue, STTConfig(stt_provider="elevenlabs")).run()
    assert fine.status == "ok"
