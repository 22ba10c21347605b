"""A small model of how Asterisk reads asterisk_conf/: its config-file format, the dialplan, and a
dialplan interpreter for the handful of applications those files use.

No Asterisk runs here, so the tests check the files against this model instead. It follows Asterisk's
own rules (main/config.c for the file format, pbx/pbx_config.c for `exten`/`same` lines and priorities,
main/pbx_variables.c for `${...}` substitution) and refuses, loudly, anything it does not implement,
so a construct it cannot judge fails a test rather than passing unexamined.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class ConfError(ValueError):
    """A config file Asterisk would reject or misread."""


# --- the config-file format (main/config.c) ---------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    lineno: int


@dataclass
class Section:
    name: str
    lineno: int
    template: bool = False
    inherits: tuple[str, ...] = ()
    entries: list[Entry] = field(default_factory=list)  # inherited ones first, as Asterisk copies them

    def values(self, key: str) -> list[str]:
        return [e.value for e in self.entries if e.key == key]

    def get(self, key: str, default: str | None = None) -> str | None:
        found = self.values(key)
        return found[-1] if found else default

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]


_HEADER = re.compile(r"^\[([^\[\]]+)\]\s*(?:\(([^()]*)\))?$")


def strip_comments(text: str) -> list[tuple[int, str]]:
    """(line number, text) with `;` comments and `;-- ... --;` blocks removed; `\\;` is a literal `;`."""
    lines: list[tuple[int, str]] = []
    in_block = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        out: list[str] = []
        i = 0
        while i < len(raw):
            if in_block:
                end = raw.find("--;", i)
                if end < 0:
                    i = len(raw)
                else:
                    in_block, i = False, end + 3
                continue
            ch = raw[i]
            if ch == "\\" and raw[i + 1 : i + 2] == ";":
                out.append(";")
                i += 2
            elif raw.startswith(";--", i):
                in_block, i = True, i + 3
            elif ch == ";":
                break
            else:
                out.append(ch)
                i += 1
        line = "".join(out).strip()
        if line:
            lines.append((lineno, line))
    if in_block:
        raise ConfError("unterminated ;-- block comment")
    return lines


def parse_config(text: str, filename: str = "<conf>") -> list[Section]:
    """Sections in file order (names may repeat: pjsip.conf has an aor and an endpoint of one name)."""
    sections: list[Section] = []
    current: Section | None = None
    for lineno, line in strip_comments(text):
        where = f"{filename}:{lineno}"
        if line.startswith("#"):
            raise ConfError(f"{where}: {line.split()[0]} is not supported by this model")
        if line.startswith("["):
            match = _HEADER.match(line)
            if not match:
                raise ConfError(f"{where}: malformed section header {line!r}")
            name, options = match.group(1).strip(), match.group(2)
            current = Section(name=name, lineno=lineno)
            for opt in (o.strip() for o in (options or "").split(",") if o.strip()):
                if opt == "!":
                    current.template = True
                elif opt == "+":
                    raise ConfError(f"{where}: (+) appending is not supported by this model")
                else:
                    templates = [s for s in sections if s.name == opt and s.template]
                    if not templates:
                        raise ConfError(f"{where}: [{name}] inherits from {opt!r}, which is not a template above it")
                    current.inherits += (opt,)
                    current.entries.extend(templates[-1].entries)
            sections.append(current)
            continue
        if "=" not in line:
            raise ConfError(f"{where}: neither a section header nor key = value: {line!r}")
        if current is None:
            raise ConfError(f"{where}: {line!r} comes before any [section]")
        key, value = line.split("=", 1)
        if value.startswith(">"):  # `key => value` is `key = value`
            value = value[1:]
        key = key.strip()
        if not key:
            raise ConfError(f"{where}: empty key in {line!r}")
        current.entries.append(Entry(key, value.strip(), lineno))
    return sections


def objects(sections: Iterable[Section]) -> list[Section]:
    """Sections that are objects, not templates."""
    return [s for s in sections if not s.template]


# --- the dialplan (pbx/pbx_config.c) ------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    priority: int
    label: str | None
    app: str
    data: str
    lineno: int


@dataclass
class Extension:
    name: str
    steps: dict[int, Step] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def ordered(self) -> list[Step]:
        return [self.steps[p] for p in sorted(self.steps)]

    def apps(self, name: str) -> list[Step]:
        return [s for s in self.ordered() if s.app.lower() == name.lower()]


Dialplan = dict[str, dict[str, Extension]]  # context -> extension name -> Extension

NOT_CONTEXTS = ("general", "globals")


def split_outside_brackets(text: str, sep: str = ",") -> tuple[str, str | None]:
    """Split at the first `sep` not inside [...] (pbx_config's pbx_strsep, for pattern character classes)."""
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        elif ch == "\\":
            i += 1
        elif ch == sep and not depth:
            return text[:i], text[i + 1 :]
        i += 1
    return text, None


def parse_dialplan(sections: Iterable[Section], filename: str = "extensions.conf") -> Dialplan:
    plan: Dialplan = {}
    for section in sections:
        if section.name in NOT_CONTEXTS:
            continue
        if section.template:
            raise ConfError(f"{filename}:{section.lineno}: dialplan templates are not supported by this model")
        if section.name in plan:
            raise ConfError(f"{filename}:{section.lineno}: context [{section.name}] defined twice")
        context = plan[section.name] = {}
        last_ext: str | None = None
        last_pri = -2  # as pbx_config: carried across extensions within a context
        for entry in section.entries:
            where = f"{filename}:{entry.lineno}"
            if entry.key in ("include", "switch", "ignorepat"):
                continue
            if entry.key == "exten":
                ext, rest = split_outside_brackets(entry.value)
                ext = ext.strip()
                if not ext or rest is None:
                    raise ConfError(f"{where}: exten needs extension,priority,application")
                last_ext = ext
            elif entry.key == "same":
                if last_ext is None:
                    raise ConfError(f"{where}: `same` before any `exten` in [{section.name}]")
                ext, rest = last_ext, entry.value
            else:
                raise ConfError(f"{where}: unknown dialplan keyword {entry.key!r}")
            pri_text, _, appl = rest.partition(",")
            pri_text = pri_text.strip()
            label = None
            if "(" in pri_text:
                pri_text, _, label = pri_text.partition("(")
                if not label.endswith(")"):
                    raise ConfError(f"{where}: label missing its closing ')'")
                label = label[:-1]
            offset = 0
            if "+" in pri_text:
                pri_text, _, plus = pri_text.partition("+")
                offset = int(plus)
            if pri_text in ("n", "next"):
                if last_pri < 0:
                    raise ConfError(f"{where}: 'n' priority on the first line of [{section.name}]")
                pri = last_pri + 1
            elif pri_text in ("s", "same"):
                if last_pri < 0:
                    raise ConfError(f"{where}: 'same' priority on the first line of [{section.name}]")
                pri = last_pri
            elif pri_text.isdigit() and int(pri_text) >= 1:
                pri = int(pri_text)
            else:
                raise ConfError(f"{where}: invalid priority {pri_text!r}")
            pri += offset
            last_pri = pri
            appl = appl.strip()
            if "(" in appl:
                app, _, data = appl.partition("(")
                end = data.rfind(")")
                if end < 0:
                    raise ConfError(f"{where}: no closing parenthesis in {appl!r}")
                if data[end + 1 :].strip():
                    raise ConfError(f"{where}: text after the application's closing parenthesis: {appl!r}")
                data = data[:end]
            else:
                app, data = appl, ""
            extension = context.setdefault(ext, Extension(ext))
            if pri in extension.steps:
                raise ConfError(f"{where}: priority {pri} of {ext}@{section.name} defined twice")
            if label:
                if label in extension.labels:
                    raise ConfError(f"{where}: label {label!r} used twice in {ext}@{section.name}")
                extension.labels[label] = pri
            extension.steps[pri] = Step(pri, label, app.strip(), data, entry.lineno)
    return plan


def split_args(data: str) -> list[str]:
    """Application/function arguments: split at commas outside (), [] and quotes (app.c's rules,
    without its quote and backslash removal, which these files do not rely on)."""
    args, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(data):
        if ch == '"':
            quote = not quote
        elif quote:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(data[start:i])
            start = i + 1
    args.append(data[start:])
    return args


def parse_host_port(service: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as AudioSocket wants its service; ValueError otherwise."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", service)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"not host:port: {service!r}")
    return match.group(1).strip("[]"), int(match.group(2))


# --- a dialplan interpreter for the applications these files use ---------------------------------------


class Unsupported(NotImplementedError):
    """A dialplan construct this model does not implement (the test must not pass over it)."""


@dataclass
class CallRecord:
    """What one simulated call did: every application run (with its substituted data), in order."""

    executed: list[tuple[str, str, str]] = field(default_factory=list)  # (context/exten/priority, app, data)
    variables: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    errors: list[str] = field(default_factory=list)  # what Asterisk would log as errors
    system_results: list[int] = field(default_factory=list)

    def apps(self, name: str) -> list[str]:
        return [data for _, app, data in self.executed if app.lower() == name.lower()]

    def order(self) -> list[str]:
        return [app for _, app, _ in self.executed]


@dataclass
class _Frame:
    context: str
    exten: str
    priority: int
    saved_locals: dict[str, str | None]


class Interpreter:
    """Runs a call through the dialplan the way Asterisk's PBX loop would, for a subset of applications.

    `modules` is the set of loaded modules (decides whether UUID() exists); `audiosocket_returns` says
    what AudioSocket() does when the session ends: 0 (the bridge hung up, Asterisk 20.14+: the dialplan
    continues) or -1 (the caller hung up, or an older Asterisk got the bridge's 0x00: the channel hangs up).
    `run_system` executes System() commands with /bin/sh, as Asterisk's ast_safe_system does.
    """

    def __init__(
        self,
        plan: Dialplan,
        global_vars: dict[str, str],
        modules: set[str],
        *,
        audiosocket_returns: int = 0,
        run_system: bool = False,
        max_steps: int = 200,
    ) -> None:
        self.plan = plan
        self.globals = dict(global_vars)
        self.modules = modules
        self.audiosocket_returns = audiosocket_returns
        self.run_system = run_system
        self.max_steps = max_steps
        self.uuids_issued: list[str] = []
        self._functions: dict[str, tuple[str, Callable[[str], str]]] = {
            "UUID": ("func_uuid.so", self._fn_uuid),
            "MD5": ("func_md5.so", lambda a: hashlib.md5(a.encode()).hexdigest()),
            "RAND": ("func_rand.so", lambda a: str(random.randint(0, 2**31 - 1))),
            "IFMODULE": ("func_module.so", lambda a: "1" if a.strip() in self.modules else "0"),
            "LEN": ("func_strings.so", lambda a: str(len(a))),
            "FILTER": ("func_strings.so", self._fn_filter),
        }
        self._seq = 0

    # functions --------------------------------------------------------------------------------------
    def _fn_uuid(self, _args: str) -> str:
        value = str(uuid.uuid4())
        self.uuids_issued.append(value)
        return value

    @staticmethod
    def _fn_filter(args: str) -> str:
        allowed_spec, _, text = args.partition(",")
        if "\\" in allowed_spec:
            raise Unsupported("FILTER() escapes")
        allowed: set[str] = set()
        i = 0
        while i < len(allowed_spec):
            if i + 2 < len(allowed_spec) and allowed_spec[i + 1] == "-":
                allowed.update(chr(c) for c in range(ord(allowed_spec[i]), ord(allowed_spec[i + 2]) + 1))
                i += 3
            else:
                allowed.add(allowed_spec[i])
                i += 1
        return "".join(ch for ch in text if ch in allowed)

    # substitution (main/pbx_variables.c) --------------------------------------------------------------
    def substitute(self, text: str, record: CallRecord) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            if text.startswith("${", i) or text.startswith("$[", i):
                opener, closer = text[i + 1], "}" if text[i + 1] == "{" else "]"
                depth, j = 1, i + 2
                while j < len(text) and depth:
                    if text[j] == opener:
                        depth += 1
                    elif text[j] == closer:
                        depth -= 1
                    j += 1
                if depth:
                    raise ConfError(f"unbalanced {text[i:i + 2]} in {text!r}")
                inner = self.substitute(text[i + 2 : j - 1], record)
                out.append(self._variable(inner, record) if opener == "{" else self._expression(inner))
                i = j
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def _variable(self, expr: str, record: CallRecord) -> str:
        if expr.endswith(")") and "(" in expr:
            name, _, args = expr[:-1].partition("(")
            if name not in self._functions:
                raise Unsupported(f"dialplan function {name}()")
            module, fn = self._functions[name]
            if module not in self.modules:
                record.errors.append(f"Function {name} not registered")
                return ""
            return fn(args)
        name, *slicing = expr.split(":")
        value = self._lookup(name, record)
        if slicing:
            offset = int(slicing[0] or 0)
            length = int(slicing[1]) if len(slicing) > 1 and slicing[1] else None
            value = value[offset:] if length is None else value[offset : offset + length]
        return value

    def _lookup(self, name: str, record: CallRecord) -> str:
        builtins = {
            "UNIQUEID": record.variables.get("__uniqueid", ""),
            "EPOCH": str(int(time.time())),
            "CHANNEL": "PJSIP/softphone-00000001",
            "HANGUPCAUSE": "16",
        }
        if name in builtins:
            return builtins[name]
        if name in record.variables:
            return record.variables[name]
        return self.globals.get(name, "")

    @staticmethod
    def _expression(expr: str) -> str:
        tokens = expr.split()
        if len(tokens) == 1:
            return tokens[0]
        if len(tokens) == 3 and tokens[1] in ("=", "!="):
            left, op, right = tokens
            try:
                equal = int(left) == int(right)
            except ValueError:
                equal = left == right
            return "1" if equal == (op == "=") else "0"
        raise Unsupported(f"expression $[{expr}]")

    # the PBX loop ----------------------------------------------------------------------------------------
    def run(self, context: str, exten: str, channel_vars: dict[str, str] | None = None) -> CallRecord:
        self._seq += 1
        record = CallRecord(variables={"__uniqueid": f"{int(time.time())}.{self._seq}", **(channel_vars or {})})
        stack: list[_Frame] = []
        locals_now: dict[str, str | None] = {}
        pos = (context, exten, 1)
        hung_up = False
        for _ in range(self.max_steps):
            ctx, ext, pri = pos
            step = self.plan.get(ctx, {}).get(ext, Extension(ext)).steps.get(pri)
            if step is None:  # autofallthrough: no next priority, the call ends
                hung_up = True
                break
            data = self.substitute(step.data, record)
            record.executed.append((f"{ctx}/{ext}/{pri}", step.app, data))
            app = step.app.lower()
            nxt = (ctx, ext, pri + 1)
            if app in ("noop", "verbose"):
                pass
            elif app == "answer":
                record.answered = True
            elif app == "set":
                name, sep, value = data.partition("=")
                if not sep:
                    raise ConfError(f"Set() without '=': {data!r}")
                if name.startswith("LOCAL(") and name.endswith(")"):
                    name = name[6:-1]
                    if not stack:
                        raise ConfError("LOCAL() outside a Gosub")
                    locals_now.setdefault(name, record.variables.get(name))
                record.variables[name] = value
            elif app == "gotoif":
                condition, _, targets = data.partition("?")
                if_true, _, if_false = targets.partition(":")
                target = if_true if _true(condition) else if_false
                if target:
                    nxt = self._goto(ctx, ext, target)
            elif app == "gosub":
                stack.append(_Frame(ctx, ext, pri + 1, locals_now))
                locals_now = {}
                parts = split_args(data)
                if len(parts) == 3:
                    nxt = self._goto(parts[0], parts[1], parts[2])
                else:
                    raise Unsupported(f"Gosub({data}) without context,extension,priority")
            elif app == "return":
                if not stack:
                    raise ConfError("Return() without Gosub")
                for name, old in locals_now.items():
                    if old is None:
                        record.variables.pop(name, None)
                    else:
                        record.variables[name] = old
                frame = stack.pop()
                locals_now = frame.saved_locals
                record.variables["GOSUB_RETVAL"] = data
                nxt = (frame.context, frame.exten, frame.priority)
            elif app == "system":
                if "\\" in data:
                    raise Unsupported("backslash escapes in System()")
                if self.run_system:
                    done = subprocess.run(["/bin/sh", "-c", data], capture_output=True, timeout=30)
                    record.system_results.append(done.returncode)
            elif app == "audiosocket":
                if not record.answered:
                    record.errors.append("Channel is not answered")
                    hung_up = True
                    break
                if self.audiosocket_returns != 0:
                    hung_up = True
                    break
            elif app == "dial":
                record.answered = True  # the AudioSocket channel answers at once; Dial answers the caller
                hung_up = True  # without the g option the caller is hung up when the callee ends
                break
            elif app == "hangup":
                hung_up = True
                break
            else:
                raise Unsupported(f"application {step.app}()")
            pos = nxt
        else:
            raise ConfError(f"more than {self.max_steps} steps: a dialplan loop?")
        if hung_up and "h" in self.plan.get(pos[0], {}):
            self._run_h(pos[0], record)
        return record

    def _run_h(self, context: str, record: CallRecord) -> None:
        for step in self.plan[context]["h"].ordered():
            data = self.substitute(step.data, record)
            record.executed.append((f"{context}/h/{step.priority}", step.app, data))
            if step.app.lower() not in ("noop", "verbose", "system"):
                raise Unsupported(f"{step.app}() in the h extension")

    def _goto(self, ctx: str, ext: str, target: str) -> tuple[str, str, int]:
        parts = split_args(target)
        if len(parts) == 3:
            ctx, ext, target = parts
        elif len(parts) == 2:
            ext, target = parts
        extension = self.plan.get(ctx, {}).get(ext)
        if extension is None:
            raise ConfError(f"goto to a missing extension {ext}@{ctx}")
        if target.isdigit():
            pri = int(target)
        elif target in extension.labels:
            pri = extension.labels[target]
        else:
            raise ConfError(f"goto to a missing label {target!r} in {ext}@{ctx}")
        if pri not in extension.steps:
            raise ConfError(f"goto to a missing priority {pri} in {ext}@{ctx}")
        return ctx, ext, pri


def _true(condition: str) -> bool:
    """pbx_checkcondition: an integer is true when non-zero; any other text when non-empty."""
    condition = condition.strip()
    try:
        return int(condition) != 0
    except ValueError:
        return bool(condition)

