"""A call's template variables: the dialogue's `[vars]` overridden by what an upstream system stored.

The upstream system (a CRM, the dialplan) may store a JSON object at `call:<uuid>` before or during the
call; a template naming a variable that is not there yet re-reads it once before giving up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol

from bridge.dialogue import MissingVariable, render
from bridge.interfaces import Logger
from voice.keys import call_vars_key

__all__ = ["CallVariables", "TextReader"]


class TextReader(Protocol):
    async def get_text(self, key: str) -> str | None: ...


class CallVariables:
    def __init__(self, call_uuid: str, defaults: Mapping[str, str], cache: TextReader, log: Logger) -> None:
        self.key = call_vars_key(call_uuid)
        self.defaults = dict(defaults)
        self.values = dict(defaults)
        self.cache = cache
        self.log = log

    async def load(self) -> None:
        """The defaults overridden by the JSON object stored at call:<uuid> (a bad one is logged and ignored)."""
        raw = await self.cache.get_text(self.key)
        if raw is None:
            return
        try:
            stored = json.loads(raw)
        except json.JSONDecodeError as exc:
            self.log.warning("call_vars_invalid", error=f"not JSON: {exc.msg}")
            return
        if not isinstance(stored, Mapping):
            self.log.warning("call_vars_invalid", error="not a JSON object")
            return
        self.values = {**self.defaults, **{str(k): _as_text(v) for k, v in stored.items() if v is not None}}

    async def render(self, template: str) -> str | None:
        """The template filled in; None (logged) when a variable is missing or the text is empty."""
        for attempt in range(2):
            try:
                text = render(template, self.values).strip()
                break
            except MissingVariable as missing:
                if attempt == 0:
                    await self.load()  # the upstream system may have stored it since the call began
                    continue
                self.log.warning("variable_missing", variable=missing.name, template=template)
                return None
        if not text:
            self.log.warning("text_empty", template=template)
            return None
        return text


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
