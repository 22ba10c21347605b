"""Structured concurrency: a call's tasks live in one task group; the shared cancel-and-wait idiom."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from bridge.call import Call
from bridge.protocol import Kind, encode
from bridge.sim.caller import place_call
from support.calls import uuid_message, wait_until
from voice.tasks import cancel_and_wait, task_group


async def test_a_hangup_right_after_the_uuid_leaves_no_task(start_server):
    """The UUID and the hang-up in one read: the handler never starts, and the call's tree ends at once."""
    started: list[Call] = []

    async def handler(call: Call) -> None:
        started.append(call)
        await asyncio.sleep(3600)

    server = await start_server(handler)
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    with capture_logs() as logs:
        writer.write(uuid_message() + encode(Kind.HANGUP))
        await wait_until(lambda: server.calls_total == 1 and not server.calls, what="the call to end")
        await asyncio.sleep(0.05)
    assert started == []
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("call:")]
    writer.close()


async def test_a_failing_task_hangs_up_and_cancels_its_siblings(start_server):
    state: dict[str, asyncio.Task[None]] = {}

    async def fail() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("boom")

    async def handler(call: Call) -> None:
        state["handler"] = asyncio.current_task()  # type: ignore[assignment]
        call.start_task(fail(), name="doomed")
        await asyncio.sleep(3600)

    server = await start_server(handler)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    with capture_logs() as logs:
        writer.write(uuid_message())
        await wait_until(lambda: "handler" in state and state["handler"].done(), what="the handler's end")
    assert state["handler"].cancelled()
    failed = [e for e in logs if e["event"] == "call_task_failed"]
    assert failed and failed[0]["task"] == "doomed"
    await wait_until(lambda: not server.calls, what="the call to end")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("call:")]
    writer.close()


async def test_cancel_and_wait_keeps_the_waiters_own_cancellation():
    """The stopped task ignores its first cancel for a while: a cancel of the waiter meanwhile must win."""
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # cleanup that takes time
            raise

    target = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cancel_and_wait(target))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await cancel_and_wait(target) == []
    assert target.cancelled()


async def test_cancel_and_wait_returns_the_stopped_tasks_error():
    async def broken() -> None:
        raise KeyError("x")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    errors = await cancel_and_wait(task, None)
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


async def test_task_group_raises_the_first_failure_itself_and_cancels_the_rest():
    sibling: asyncio.Task[None] | None = None

    async def fail() -> None:
        raise LookupError("the first failure")

    with pytest.raises(LookupError, match="the first failure"):
        async with task_group() as group:
            sibling = group.create_task(asyncio.sleep(3600))
            group.create_task(fail())
            await asyncio.sleep(3600)
    assert sibling is not None and sibling.cancelled()


async def test_task_group_lets_an_outside_cancellation_win_over_a_failure_it_caused():
    """A hang-up cancels the dialogue and fails its playback at once: the dialogue must see the cancel."""
    failing = asyncio.get_running_loop().create_future()

    async def play() -> None:
        await failing

    async def dialogue() -> None:
        async with task_group() as group:
            group.create_task(play())
            await asyncio.sleep(3600)

    task = asyncio.create_task(dialogue())
    await asyncio.sleep(0.01)
    failing.set_exception(LookupError("call_ended"))  # the playback fails ...
    task.cancel()  # ... in the same loop iteration as the dialogue is cancelled
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stop_waits_for_a_call_that_hung_up_but_is_still_cleaning_up(start_server):
    # the dialogue's cleanup (closing a WebSocket, its last log line) runs after the connection has closed;
    # a server stopped meanwhile must let it finish rather than end the process under it
    cleaned: list[str] = []

    async def handler(call):
        try:
            await call.hangup()
        finally:
            await asyncio.sleep(0.3)  # e.g. closing the call's TTS WebSocket
            cleaned.append("done")

    server = await start_server(handler)
    report = await place_call("127.0.0.1", server.port, duration_s=None, max_wait_s=5)
    assert report.hangup == "server" and not server.connections
    await server.stop(0)
    assert cleaned == ["done"]
