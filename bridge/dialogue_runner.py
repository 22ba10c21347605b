"""The dialogue walk of one call: node after node, DTMF choices, timeouts, variables, hang-up nodes.

Each node runs its steps in order (`PlaybackStep`, the node's playlist; then `bridge.listening.ListeningStep`,
when the node listens): a step may end with the caller's DTMF digit, which picks the next node from the
node's menu, or with a `Goto` (what the caller said chose the next node). After the steps, a menu waits
`timeout_s` for a digit; then the node goes `next`, or hangs up.

The walk stops as soon as the call has ended: it never starts a node or waits for a digit on a call that
hung up. A spin guard stops a dialogue whose nodes follow each other without a sound (every item skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from bridge.call import DtmfEvent, HangupEvent
from bridge.dialogue import Dialogue, Node
from bridge.interfaces import CallLine
from bridge.listening import Goto
from bridge.playlist import Playlist
from bridge.speaker import Speaker
from bridge.variables import CallVariables
from voice.llm import ConversationManager

__all__ = ["MAX_SILENT_STEPS", "DialogueRunner", "NodeStep", "PlaybackStep"]

MAX_SILENT_STEPS = 20
"""Node changes in a row with no audio queued before the dialogue is declared stuck."""


class NodeStep(Protocol):
    """One thing a node does before its menu: returns the DTMF digit that ended it (or was pressed), or a
    `Goto` when it chose the next node itself."""

    async def run(self, node: Node) -> str | Goto | None: ...


class PlaybackStep:
    """A node's playlist, with barge-in when the node asks for it."""

    def __init__(self, playlist: Playlist) -> None:
        self.playlist = playlist

    async def run(self, node: Node) -> str | None:
        return await self.playlist.play(node.play, node.barge_in)


class DialogueRunner:
    def __init__(self, call: CallLine, dialogue: Dialogue, steps: Sequence[NodeStep], *, variables: CallVariables,
                 speaker: Speaker, conversation: ConversationManager | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.call = call
        self.dialogue = dialogue
        self.steps = tuple(steps)
        self.variables = variables
        self.speaker = speaker
        self.conversation = conversation
        self.log = call.log
        self._queued_at_last_step = -1
        self._silent_steps = 0
        self._on_close = on_close

    def close(self) -> None:
        """The dialogue is over: undo the wiring that ties the call's rooms to each other in a cycle (`on_close`,
        from whoever wired them), so that they are freed by reference counting when the call ends."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def run(self) -> None:
        """Play the dialogue from its start node until a node ends it, then hang up (once the audio is out)."""
        await self.variables.load()
        node: Node | None = self.dialogue.nodes[self.dialogue.start]
        while node is not None and not self.call.ended:
            self.log.info("node", node=node.name)
            node = await self._run_node(node)
        if self.call.ended:
            return
        await self.call.drained()
        await self.call.hangup()

    async def _run_node(self, node: Node) -> Node | None:
        """The node's steps; a step's digit of the menu or `Goto` leaves the node, an unknown digit is
        logged and the next step runs (a listening node keeps listening after its prompt was cut)."""
        chosen: str | Goto | None = None
        for step in self.steps:
            result = await step.run(node)
            if self.call.ended:
                return None
            if isinstance(result, Goto):
                chosen = result
                break
            if result is not None:
                if result in node.dtmf:
                    chosen = result
                    break
                self.log.info("dtmf_ignored", node=node.name, digit=result)
        if node.hangup or self.call.ended:
            return None
        if isinstance(chosen, Goto):
            return self._follow(node, chosen.target)
        if chosen is not None:
            self._chose(node, chosen)
            return self._follow(node, node.dtmf[chosen])
        return await self._await_choice(node)

    async def _await_choice(self, node: Node) -> Node | None:
        """After the steps: wait `timeout_s` for a digit of the menu, then go to `next`.

        Without a menu, `timeout_s` is a pause; a menu without `timeout_s` waits as long as the caller.
        """
        if not node.dtmf:
            if node.timeout_s:
                await asyncio.sleep(node.timeout_s)
            return self._follow(node, node.next)
        loop = asyncio.get_running_loop()
        deadline = None if node.timeout_s is None else loop.time() + node.timeout_s
        while not self.call.ended:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                event = await asyncio.wait_for(self.call.events.get(), remaining)
            except TimeoutError:
                self.log.info("dtmf_timeout", node=node.name)
                return self._follow(node, node.next)
            if isinstance(event, HangupEvent):
                return None
            if isinstance(event, DtmfEvent):
                target = node.dtmf.get(event.digit)
                if target is not None:
                    self._chose(node, event.digit)
                    return self._follow(node, target)
                self.log.info("dtmf_ignored", node=node.name, digit=event.digit)
        return None

    def _chose(self, node: Node, digit: str) -> None:
        """A digit moved the dialogue: the LLM's memory of the call gets it."""
        if self.conversation is not None:
            self.conversation.add_choice(node.name, digit)

    def _follow(self, node: Node, target: str | None) -> Node | None:
        """The next node, unless the dialogue is spinning: nodes going on at once without a sound.

        The loader refuses empty playlists, but at run time every item of a playlist can be skipped
        (fragments missing, variables missing); a `next` loop would then spin without a pause.
        """
        if target is None or self.call.ended:
            return None
        queued = self.speaker.frames_queued
        if self._queued_at_last_step == queued:
            self._silent_steps += 1
            if self._silent_steps >= MAX_SILENT_STEPS:
                self.log.error("dialogue_spinning", node=node.name, steps=self._silent_steps)
                return None
        else:
            self._silent_steps = 0
        self._queued_at_last_step = queued
        return self.dialogue.nodes[target]
