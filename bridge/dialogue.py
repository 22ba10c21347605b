"""The dialogue map: what a call hears and where its digits take it, loaded from a TOML file.

A dialogue is a set of named nodes. Each node plays a playlist of items (a pre-recorded fragment, a
synthesized template, an LLM answer), then follows a digit (`dtmf`), waits `timeout_s` and goes `next`, or
hangs up. A node may also listen after its playlist (`listen`): the caller's words become a call variable
and pick the next node by `routes` (regular expressions on the normalised transcript), with `no_input`
and `no_match` targets; digits are still accepted meanwhile. The file is checked completely when it is
loaded, and every problem is reported at once with the file, the node and the item it concerns, so an
operator's typo stops start-up instead of a live call.

Templates use `{name}` placeholders filled from the dialogue's `[vars]` and the call's own variables;
`{{` and `}}` are literal braces. `render()` never returns a string with a placeholder left in it: a name
without a value raises `MissingVariable`, so the caller never hears "{amount}".

This module is pure data and parsing: no I/O besides reading the file, no asyncio, no Redis.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from bridge.protocol import DTMF_CHARS

__all__ = [
    "DTMF_DIGITS",
    "ITEM_KINDS",
    "Dialogue",
    "DialogueError",
    "Item",
    "ItemKind",
    "Listen",
    "MissingVariable",
    "Node",
    "Route",
    "SpokenChoice",
    "default_dialogue_path",
    "load_dialogue",
    "normalise_transcript",
    "parse_dialogue",
    "render",
    "template_variables",
]

ItemKind: TypeAlias = Literal["static", "tts", "llm"]
ITEM_KINDS: tuple[ItemKind, ...] = ("static", "tts", "llm")
DTMF_DIGITS = frozenset(DTMF_CHARS)  # the codec's digits, as the strings a dialogue's dtmf table keys

_TOP_KEYS = ("start", "vars", "nodes")
_NODE_KEYS = ("play", "barge_in", "dtmf", "timeout_s", "next", "hangup", "listen", "routes", "no_input", "no_match")
_LISTEN_KEYS = ("into", "timeout_s", "max_s")
_ITEM_KEYS = (*ITEM_KINDS, "text")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- templates ------------------------------------------------------------------------------------------


class MissingVariable(LookupError):
    """A template names a variable that has no value. The caller must skip the item, never speak it raw."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no value for variable {name!r}")
        self.name = name


# One token: an escaped brace, a placeholder (whatever is between braces), or a stray brace.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@functools.lru_cache(maxsize=1024)
def _parse_template(template: str) -> tuple[tuple[str, str | None], ...]:
    """Split a template into (literal text, variable name or None) pairs; ValueError names the fault.

    Cached because the same few templates are rendered on every call.
    """
    parts: list[tuple[str, str | None]] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(template):
        literal.append(template[pos:match.start()])
        pos = match.end()
        token = match.group()
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if token == "{":
            raise ValueError(f"unclosed '{{' at character {match.start() + 1}; write '{{{{' for a literal brace")
        if token == "}":
            raise ValueError(f"single '}}' at character {match.start() + 1}; write '}}}}' for a literal brace")
        name = match.group(1)
        if not name.strip():
            raise ValueError(f"empty placeholder {token!r} at character {match.start() + 1}; put a variable name "
                             "inside, or write '{{' and '}}' for literal braces")
        if _NAME.fullmatch(name) is None:
            hint = ("format specs and conversions (':' and '!') are not supported"
                    if _NAME.fullmatch(re.split(r"[:!]", name, maxsplit=1)[0]) else
                    "a variable name is letters, digits and '_', not starting with a digit")
            raise ValueError(f"bad placeholder {token!r} at character {match.start() + 1}: {hint}")
        parts.append(("".join(literal), name))
        literal = []
    literal.append(template[pos:])
    tail = "".join(literal)
    if tail or not parts:
        parts.append((tail, None))
    return tuple(parts)


def template_variables(template: str) -> frozenset[str]:
    """The variable names a template uses. Raises ValueError if the template is malformed."""
    return frozenset(name for _, name in _parse_template(template) if name is not None)


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders from `variables`; `{{`/`}}` become literal braces.

    Values are inserted as they are (a value containing braces is not expanded again). Raises
    `MissingVariable` for the first name without a value, and ValueError for a malformed template
    (templates loaded by `parse_dialogue` are already known to be well formed).
    """
    out: list[str] = []
    for literal, name in _parse_template(template):
        out.append(literal)
        if name is not None:
            try:
                out.append(variables[name])
            except KeyError:
                raise MissingVariable(name) from None
    return "".join(out)


# --- the model ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One playlist entry.

    - `static`: `value` is a fragment name, played from `static:<value>`; `text`, if given, is a template
      spoken with TTS when the fragment is missing.
    - `tts`: `value` is a template, rendered and synthesized (cached under its text).
    - `llm`: `value` is a prompt template; the LLM's answer is spoken as it streams.
    """

    kind: ItemKind
    value: str
    text: str | None = None

    @property
    def variables(self) -> frozenset[str]:
        """Every variable this item needs: the template of a tts/llm item, the `text` of a static one."""
        if self.kind == "static":
            return template_variables(self.text) if self.text is not None else frozenset()
        return template_variables(self.value)


# --- listening ------------------------------------------------------------------------------------------

_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalise_transcript(text: str) -> str:
    """What routes are matched against: lowercased, `ё` read as `е`, punctuation gone, single spaces.

    Recognizers differ in capitals and punctuation ("Да." / "да" / "ДА!"), and Russian text drops the
    diaeresis as often as not; none of that should change where the caller goes.
    """
    return " ".join(_PUNCTUATION.sub(" ", text.lower().replace("ё", "е")).split())


@dataclasses.dataclass(frozen=True, slots=True)
class Listen:
    """How a node listens after its playlist (`listen = { into = "reply", timeout_s = 6, max_s = 15 }`).

    - `into`: the call variable the transcript is stored in (`{reply}` in later items);
    - `timeout_s`: how long to wait for the caller to start speaking before `no_input`;
    - `max_s`: the longest utterance; the recognizer is told to finish it then.
    """

    into: str = "reply"
    timeout_s: float = 6.0
    max_s: float = 15.0


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """`"pattern" = "node"`: the pattern, a case-insensitive regular expression, must match whole words of
    the normalised transcript (`"да"` matches "да, конечно" but not "когда")."""

    pattern: str
    target: str
    regex: re.Pattern[str] = dataclasses.field(compare=False, repr=False)

    @classmethod
    def compile(cls, pattern: str, target: str) -> Route:
        """Raises re.error for a malformed pattern."""
        body = pattern.lower().replace("ё", "е")
        return cls(pattern, target, re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE))

    def matches(self, normalised: str) -> bool:
        return self.regex.search(normalised) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class SpokenChoice:
    """Where a listening node goes, and why: `route` (a pattern matched), `next` (no routes: any answer),
    `no_match`, or `no_input` (nothing said, nothing understood, or no recognizer)."""

    target: str | None
    outcome: Literal["route", "next", "no_match", "no_input"]
    pattern: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """One step of the dialogue. Defaults are what an omitted key means in the file."""

    name: str
    play: tuple[Item, ...] = ()
    barge_in: bool = False
    dtmf: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    timeout_s: float | None = None
    next: str | None = None
    hangup: bool = False
    listen: Listen | None = None
    routes: tuple[Route, ...] = ()
    no_input: str | None = None
    no_match: str | None = None

    def choose(self, transcript: str | None) -> SpokenChoice:
        """Where the caller's words lead (None: nothing was said, or nothing could be heard).

        The first route whose pattern matches wins; without routes any answer goes `next`. An empty
        transcript (speech nobody could read) is `no_match` when the node has one, else `no_input`.
        `no_input` and `no_match` fall back to `next`.
        """
        text = normalise_transcript(transcript) if transcript else ""
        if not text:
            if transcript is not None and self.no_match is not None:
                return SpokenChoice(self.no_match, "no_match")
            return SpokenChoice(self.no_input or self.next, "no_input")
        for route in self.routes:
            if route.matches(text):
                return SpokenChoice(route.target, "route", route.pattern)
        if not self.routes:
            return SpokenChoice(self.next, "next")
        return SpokenChoice(self.no_match or self.next, "no_match")

    @property
    def spoken_targets(self) -> tuple[str, ...]:
        """Every node the listening may lead to (routes, no_input, no_match)."""
        targets = [route.target for route in self.routes]
        targets += [t for t in (self.no_input, self.no_match) if t is not None]
        return tuple(targets)


@dataclasses.dataclass(frozen=True, slots=True)
class Dialogue:
    """A validated dialogue map. `source` is where it was read from (a path, or '<string>')."""

    start: str
    vars: Mapping[str, str]
    nodes: Mapping[str, Node]
    source: str

    @property
    def uses_llm(self) -> bool:
        """Whether any node plays an `llm` item (then LLM settings are required)."""
        return any(item.kind == "llm" for node in self.nodes.values() for item in node.play)

    @property
    def listens(self) -> bool:
        """Whether any node listens to the caller (then each call gets a speech recognizer, if configured)."""
        return any(node.listen is not None for node in self.nodes.values())

    @property
    def heard_variables(self) -> frozenset[str]:
        """The variables listening nodes fill with what the caller said."""
        return frozenset(node.listen.into for node in self.nodes.values() if node.listen is not None)

    @property
    def variables(self) -> frozenset[str]:
        """Every variable name used by any item; those not in `vars` must come from the call."""
        return frozenset().union(*(item.variables for node in self.nodes.values() for item in node.play))


# --- loading --------------------------------------------------------------------------------------------


class DialogueError(ValueError):
    """An invalid dialogue file. One line per problem, each `<source>: <where>: <what is wrong>`."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}: {problem}" for problem in self.problems))


def default_dialogue_path() -> Path:
    """The sample dialogue shipped with the package, used when `DIALOGUE_FILE` is not set."""
    return Path(str(importlib.resources.files("bridge").joinpath("data", "dialogue.toml")))


def load_dialogue(path: str | os.PathLike[str]) -> Dialogue:
    """Read and validate a dialogue file (UTF-8 TOML). Raises DialogueError naming every problem."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise DialogueError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DialogueError(source, [f"not UTF-8 text (byte {exc.start})"]) from None
    return parse_dialogue(text, source)


def parse_dialogue(text: str, source: str = "<string>") -> Dialogue:
    """Parse and validate dialogue TOML. Raises DialogueError naming every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DialogueError(source, [f"invalid TOML: {exc}"]) from None
    return _Loader(source).load(data)


def _kind_of(value: object) -> str:
    """How an operator would call a TOML value's type, for error messages."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Loader:
    """Turns parsed TOML into a Dialogue, collecting every problem instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        # Set when a dtmf or next entry is malformed or points nowhere: reachability would then report
        # nodes that the operator's intended link does reach, so it is not checked.
        self.links_broken = False

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def unknown_keys(self, where: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for key in table:
            if key not in allowed:
                self.problem(where, f"unknown key {key!r}{_did_you_mean(key, allowed)}; "
                                    f"allowed: {', '.join(allowed)}")

    def load(self, data: dict[str, Any]) -> Dialogue:
        self.unknown_keys("top level", data, _TOP_KEYS)
        variables = self.variables(data.get("vars", {}))
        nodes = self.nodes(data.get("nodes"))
        start = self.start(data.get("start"), nodes)
        self.references(nodes)
        if start is not None and not self.links_broken:
            self.reachability(start, nodes)
        if self.problems:
            raise DialogueError(self.source, self.problems)
        assert start is not None
        return Dialogue(start=start, vars=MappingProxyType(variables), nodes=MappingProxyType(nodes),
                        source=self.source)

    def variables(self, table: object) -> dict[str, str]:
        if not isinstance(table, dict):
            self.problem("vars", f"must be a table of name = \"value\", got {_kind_of(table)}")
            return {}
        out: dict[str, str] = {}
        for name, value in table.items():
            if _NAME.fullmatch(name) is None:
                self.problem(f"vars.{name}", "not a valid variable name (letters, digits and '_', "
                                             "not starting with a digit)")
            if isinstance(value, str):
                out[name] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                out[name] = str(value)
            else:
                self.problem(f"vars.{name}", f"must be a string (or a whole number), got {_kind_of(value)}; "
                                             "put it in quotes")
        return out

    def nodes(self, table: object) -> dict[str, Node]:
        if table is None:
            self.problem("nodes", "no nodes: add at least one [nodes.<name>] table")
            return {}
        if not isinstance(table, dict):
            self.problem("nodes", f"must be a table of [nodes.<name>] tables, got {_kind_of(table)}")
            return {}
        if not table:
            self.problem("nodes", "no nodes: add at least one [nodes.<name>] table")
        nodes: dict[str, Node] = {}
        for name, body in table.items():
            where = f"node {name!r}"
            if not name:
                self.problem(where, "a node name must not be empty")
            if not isinstance(body, dict):
                self.problem(where, f"must be a table ([nodes.{name}]), got {_kind_of(body)}")
                nodes[name] = Node(name=name)  # still a valid reference target: no cascade of errors
                continue
            nodes[name] = self.node(name, body)
        return nodes

    def node(self, name: str, body: dict[str, Any]) -> Node:
        where = f"node {name!r}"
        self.unknown_keys(where, body, _NODE_KEYS)
        play = self.playlist(where, body.get("play", []))
        barge_in = self.boolean(where, "barge_in", body.get("barge_in", False))
        hangup = self.boolean(where, "hangup", body.get("hangup", False))
        dtmf = self.dtmf(where, body.get("dtmf", {}))
        timeout_s = self.timeout(where, body.get("timeout_s"))
        nxt = body.get("next")
        if nxt is not None and not isinstance(nxt, str):
            self.problem(where, f"next must be a node name (a string), got {_kind_of(nxt)}")
            self.links_broken = True
            nxt = None
        listen = self.listen(where, body["listen"]) if "listen" in body else None
        routes = self.routes(where, body.get("routes", {}))
        no_input = self.target(where, "no_input", body.get("no_input"))
        no_match = self.target(where, "no_match", body.get("no_match"))
        self.shape(where, body)
        self.listening_shape(where, body)
        return Node(name=name, play=play, barge_in=barge_in, dtmf=MappingProxyType(dtmf), timeout_s=timeout_s,
                    next=nxt, hangup=hangup, listen=listen, routes=routes, no_input=no_input, no_match=no_match)

    def listen(self, where: str, table: object) -> Listen | None:
        if not isinstance(table, dict):
            self.problem(where, f"listen must be a table like {{ into = \"reply\", timeout_s = 6 }}, "
                                f"got {_kind_of(table)}")
            return None
        self.unknown_keys(f"{where}: listen", table, _LISTEN_KEYS)
        into = table.get("into", "reply")
        if not isinstance(into, str) or _NAME.fullmatch(into) is None:
            self.problem(where, f"listen.into must be a variable name (letters, digits and '_', not starting "
                                f"with a digit), got {_kind_of(into)}")
            into = "reply"
        defaults = Listen()
        timeout_s = self.seconds(where, "listen.timeout_s", table.get("timeout_s", defaults.timeout_s))
        max_s = self.seconds(where, "listen.max_s", table.get("max_s", defaults.max_s))
        return Listen(into=into, timeout_s=timeout_s or defaults.timeout_s, max_s=max_s or defaults.max_s)

    def seconds(self, where: str, key: str, value: object) -> float | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
        self.problem(where, f"{key} must be a positive number of seconds, got {_kind_of(value)}")
        return None

    def routes(self, where: str, table: object) -> tuple[Route, ...]:
        if not isinstance(table, dict):
            self.problem(where, f"routes must be a table like {{ \"да|yes\" = \"node\" }}, got {_kind_of(table)}")
            self.links_broken = True
            return ()
        out: list[Route] = []
        for pattern, target in table.items():
            if not pattern.strip():
                self.problem(where, "routes: an empty pattern would match anything; use next for any answer")
                continue
            if not isinstance(target, str):
                self.problem(where, f"routes {pattern!r} must name a node (a string), got {_kind_of(target)}")
                self.links_broken = True
                continue
            try:
                out.append(Route.compile(pattern, target))
            except re.error as exc:
                self.problem(where, f"routes {pattern!r} is not a valid regular expression: {exc}")
        return tuple(out)

    def target(self, where: str, key: str, value: object) -> str | None:
        if value is None or isinstance(value, str):
            return value
        self.problem(where, f"{key} must be a node name (a string), got {_kind_of(value)}")
        self.links_broken = True
        return None

    def listening_shape(self, where: str, body: Mapping[str, Any]) -> None:
        """A listening node must say where every outcome goes; the listening keys need `listen`."""
        if "listen" not in body:
            for key in ("routes", "no_input", "no_match"):
                if key in body:
                    self.problem(where, f"{key} needs listen: add listen = {{ into = \"reply\" }} "
                                        "for the node to hear the caller")
            return
        if body.get("hangup") is True:
            self.problem(where, "hangup = true ends the call after the playlist, so listen would never be used")
        if "timeout_s" in body:
            self.problem(where, "a listening node waits listen.timeout_s for the caller (digits included); "
                                "remove timeout_s")
        goes_next = "next" in body
        if not goes_next and "no_input" not in body:
            self.problem(where, "listen needs no_input or next: where the call goes when the caller says nothing")
        if body.get("routes"):
            if not goes_next and "no_match" not in body:
                self.problem(where, "routes need no_match or next: where the call goes when no route matches")
        elif not goes_next:
            self.problem(where, "listen without routes needs next: where the call goes with the caller's answer")

    def shape(self, where: str, body: Mapping[str, Any]) -> None:
        """Reject nodes whose keys contradict each other or that leave the call nowhere to go.

        Works on which keys are present (not on their parsed values) so that a key already reported as
        malformed does not cause a second, misleading complaint.
        """
        hangup = body.get("hangup", False)
        if not isinstance(hangup, bool):
            return
        if hangup:
            unused = [k for k in ("dtmf", "timeout_s", "next") if k in body]
            if unused:
                self.problem(where, f"hangup = true ends the call after the playlist, so {', '.join(unused)} "
                                    "would never be used; remove them or remove hangup")
            return
        if "listen" in body:
            return  # listening_shape says what a listening node needs
        plays, digits = bool(body.get("play")), bool(body.get("dtmf"))
        timed, goes_next = "timeout_s" in body, "next" in body
        if timed and not goes_next:
            self.problem(where, "timeout_s needs next: the node to go to when no digit comes in time")
        if digits and goes_next and not timed:
            self.problem(where, "has dtmf and next but no timeout_s: say how many seconds to wait for a "
                                "digit before going next")
        if not digits and not goes_next and not timed:
            if plays:
                self.problem(where, "the call would stay in silence forever after this playlist: "
                                    "add next, dtmf or hangup = true")
            else:
                self.problem(where, "empty node: nothing to play and nowhere to go; "
                                    "add play, next, dtmf or hangup = true")
        elif goes_next and not plays and not digits and not timed:
            self.problem(where, "plays nothing and waits for nothing: point to the next node directly, "
                                "or add play or timeout_s")

    def boolean(self, where: str, key: str, value: object) -> bool:
        if isinstance(value, bool):
            return value
        self.problem(where, f"{key} must be true or false, got {_kind_of(value)}")
        return False

    def timeout(self, where: str, value: object) -> float | None:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
        self.problem(where, f"timeout_s must be a positive number of seconds, got {_kind_of(value)}")
        return None

    def dtmf(self, where: str, table: object) -> dict[str, str]:
        if not isinstance(table, dict):
            self.problem(where, f"dtmf must be a table like {{ \"1\" = \"node\" }}, got {_kind_of(table)}")
            self.links_broken = True
            return {}
        out: dict[str, str] = {}
        for digit, target in table.items():
            if digit not in DTMF_DIGITS:
                hint = f" (did you mean {digit.upper()!r}?)" if digit.upper() in DTMF_DIGITS else ""
                self.problem(where, f"dtmf key {digit!r} is not a DTMF digit{hint}; one of 0-9 * # A B C D")
                self.links_broken = True
                continue
            if not isinstance(target, str):
                self.problem(where, f"dtmf {digit!r} must name a node (a string), got {_kind_of(target)}")
                self.links_broken = True
                continue
            out[digit] = target
        return out

    def playlist(self, where: str, play: object) -> tuple[Item, ...]:
        if not isinstance(play, list):
            self.problem(where, f"play must be a list of items like [ {{ static = \"hello\" }} ], "
                                f"got {_kind_of(play)}")
            return ()
        items = (self.item(f"{where}: play item {index}", raw) for index, raw in enumerate(play, start=1))
        return tuple(item for item in items if item is not None)

    def item(self, where: str, raw: object) -> Item | None:
        if not isinstance(raw, dict):
            self.problem(where, f"must be a table like {{ static = \"hello\" }} or {{ tts = \"{{amount}}\" }}, "
                                f"got {_kind_of(raw)}")
            return None
        self.unknown_keys(where, raw, _ITEM_KEYS)
        kinds = [k for k in ITEM_KINDS if k in raw]
        if not kinds:
            self.problem(where, f"no kind: give exactly one of {', '.join(ITEM_KINDS)}")
            return None
        if len(kinds) > 1:
            self.problem(where, f"several kinds in one item ({', '.join(kinds)}); make one item for each")
            return None
        kind = kinds[0]
        value = raw[kind]
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"{kind} must be a non-empty string, got {_kind_of(value)}")
            return None
        ok = True
        if kind == "static":
            if value != value.strip():
                self.problem(where, f"static fragment name {value!r} has spaces at its ends")
                ok = False
            if "{" in value or "}" in value:
                self.problem(where, f"static fragment name {value!r} has braces: fragment names are not "
                                    "templates (use tts, or text for a spoken fallback)")
                ok = False
        else:
            ok = self.template(f"{where} ({kind})", value)
        text = raw.get("text")
        if "text" in raw:
            if kind != "static":
                self.problem(where, f"text is only for static items (a fallback spoken when the fragment is "
                                    f"missing); a {kind} item is already spoken text")
                ok = False
            elif not isinstance(text, str) or not text.strip():
                self.problem(where, f"text must be a non-empty string, got {_kind_of(text)}")
                ok = False
            else:
                ok = self.template(f"{where} (static text)", text) and ok
        return Item(kind=kind, value=value, text=text if kind == "static" else None) if ok else None

    def template(self, where: str, template: str) -> bool:
        try:
            _parse_template(template)
        except ValueError as exc:
            self.problem(where, f"template {template!r}: {exc}")
            return False
        return True

    def start(self, start: object, nodes: Mapping[str, Node]) -> str | None:
        if start is None:
            self.problem("start", "missing: add start = \"<name of the first node>\" at the top of the file")
            return None
        if not isinstance(start, str):
            self.problem("start", f"must be a node name (a string), got {_kind_of(start)}")
            return None
        if start not in nodes:
            if nodes:
                self.problem("start", f"{start!r} is not a node{_did_you_mean(start, list(nodes))}; "
                                      f"nodes: {', '.join(nodes)}")
            return None
        return start

    def references(self, nodes: Mapping[str, Node]) -> None:
        names = list(nodes)
        for node in nodes.values():
            where = f"node {node.name!r}"
            for digit, target in node.dtmf.items():
                if target not in nodes:
                    self.problem(where, f"dtmf {digit!r} goes to unknown node {target!r}"
                                        f"{_did_you_mean(target, names)}")
                    self.links_broken = True
            if node.next is not None and node.next not in nodes:
                self.problem(where, f"next goes to unknown node {node.next!r}{_did_you_mean(node.next, names)}")
                self.links_broken = True
            for route in node.routes:
                if route.target not in nodes:
                    self.problem(where, f"routes {route.pattern!r} goes to unknown node {route.target!r}"
                                        f"{_did_you_mean(route.target, names)}")
                    self.links_broken = True
            for key, other in (("no_input", node.no_input), ("no_match", node.no_match)):
                if other is not None and other not in nodes:
                    self.problem(where, f"{key} goes to unknown node {other!r}{_did_you_mean(other, names)}")
                    self.links_broken = True

    def reachability(self, start: str, nodes: Mapping[str, Node]) -> None:
        seen = {start}
        todo = [start]
        while todo:
            node = nodes[todo.pop()]
            for target in (*node.dtmf.values(), node.next, *node.spoken_targets):
                if target is not None and target in nodes and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in nodes:
            if name not in seen:
                self.problem(f"node {name!r}", f"unreachable: no dtmf or next leads to it from start {start!r}")
