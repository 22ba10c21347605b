"""What an ended call leaves behind: nothing for the garbage collector. Its objects (the call, its tasks,
the dialogue's rooms, the frames of a dialogue cut short) are freed by reference counting when it ends,
so no full collection, which stops every live call, is needed to free them (docs/reliability.md, "Memory")."""

from __future__ import annotations

import asyncio
import collections
import gc
import types
from pathlib import Path

import bridge
from support.stack import wait_for

MENU = """
start = "menu"
[nodes.menu]
play = [ { static = "hello" }, { static = "your_cost_is" }, { static = "rubles" }, { static = "menu" } ]
barge_in = true
dtmf = { "1" = "menu", "0" = "bye" }
timeout_s = 5
next = "bye"
[nodes.bye]
play = [ { static = "goodbye" } ]
hangup = true
"""

_ROOT = Path(bridge.__file__).resolve().parent.parent
_OURS = (str(_ROOT / "bridge") + "/", str(_ROOT / "voice") + "/")
_NOT_THE_BRIDGE = (str(_ROOT / "bridge" / "sim") + "/", str(_ROOT / "voice" / "emulators") + "/")


def _ours(obj: object) -> str | None:
    """What `obj` is when it belongs to the bridge's side of a call (the caller and the emulator run in this
    process too, and are not what is tested); None for anything else (asyncio's, other libraries')."""
    code = None
    if isinstance(obj, asyncio.Task):
        code = getattr(obj.get_coro(), "cr_code", None)
    elif isinstance(obj, (types.FrameType, types.CoroutineType, types.AsyncGeneratorType, types.FunctionType)):
        code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None) or getattr(obj, "ag_code", None) \
            or getattr(obj, "__code__", None)
    if code is not None:
        path = str(Path(code.co_filename).resolve())
        if path.startswith(_OURS) and not path.startswith(_NOT_THE_BRIDGE):
            return f"{type(obj).__name__} {code.co_qualname}"
        return None
    module = type(obj).__module__
    if module.startswith(("bridge.", "voice.")) and not module.startswith(("bridge.sim", "voice.emulators")):
        return f"{module}.{type(obj).__qualname__}"
    return None


async def test_an_ended_call_leaves_no_cyclic_garbage(stack):
    await stack.start(MENU)
    # Warm up: first-use caches, and the Redis pool's connections (a connection made on a call's behalf
    # leaves a redis-py traceback cycle, and with it that call's task: another library's, not tested here).
    await asyncio.gather(*(stack.cache.get_text(f"warm-up:{i}") for i in range(8)))
    await asyncio.gather(stack.call(duration_s=0.5), stack.call(duration_s=None, dtmf=[(0.3, "0")]))
    gc.collect()
    gc.disable()  # what the calls leave must still be there to be counted, whatever its generation
    try:
        reports = await asyncio.gather(
            stack.call(duration_s=0.3),  # the caller hangs up mid-prompt
            stack.call(duration_s=1.5, dtmf=[(0.5, "1")]),  # a digit cuts the prompt (barge-in), then hangs up
            stack.call(duration_s=None, dtmf=[(0.5, "0")]),  # the dialogue ends the call: the server hangs up
        )
        await wait_for(lambda: not [t for t in asyncio.all_tasks() if t.get_name().startswith("call:")])
        gc.set_debug(gc.DEBUG_SAVEALL)  # unreachable objects are kept in gc.garbage instead of freed
        gc.collect()
        left = collections.Counter(filter(None, map(_ours, gc.garbage)))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert [r.hangup for r in reports] == ["caller", "caller", "server"]
    assert left == {}, f"cyclic garbage of ended calls: {dict(left)}"
