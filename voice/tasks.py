"""Task hygiene for the whole project: `task_group` (structured concurrency) and `cancel_and_wait`.

`task_group()` is `asyncio.TaskGroup` for code that raises ordinary exceptions: when the block or a task
fails, the siblings are cancelled and waited for as usual, and the first failure is raised itself rather
than wrapped in an `ExceptionGroup` (callers catch `CallEnded`, `TTSError`, ... as they always did);
when the task running the block is being cancelled, the cancellation propagates, never a task's failure.

It also leaves no reference cycle behind when it ends with an exception, so that what a call's dialogue
built is freed by reference counting when a hang-up cuts it short, not by the collector's next full pass
(docs/reliability.md, "Memory"). Python 3.11's own `TaskGroup` leaves two: the `ExceptionGroup` it raises
is a local of the frame its traceback holds, and the group keeps its parent task, which a frame of that
task holds while the task keeps the exception whose traceback holds that frame (CPython gh-124958 and
gh-128552: fixed upstream, not in 3.11). And a first failure re-raised from inside `except` would
get the group that contains it as its `__context__`, a cycle of two.

`task.cancel()` followed by `await task` inside `suppress(CancelledError)` also swallows the *awaiting*
task's own cancellation (a hang-up arriving during the wait would be lost, and the awaiting task would run
on). `asyncio.wait` never raises the awaited task's outcome, so only the awaiting task's own cancellation
propagates; the stopped task's exception, if it had one, is retrieved (not reported by the loop) and
returned for the caller to judge.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

__all__ = ["cancel_and_wait", "release_task_group", "task_group"]


class task_group:
    """An `asyncio.TaskGroup` that re-raises its first failure unwrapped (see the module docstring)."""

    __slots__ = ("_group",)

    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()

    async def __aenter__(self) -> asyncio.TaskGroup:
        return await self._group.__aenter__()

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        group = self._group
        try:
            await group.__aexit__(et, exc, tb)
            return
        except BaseExceptionGroup as failed:
            _clear_exit_frame(failed)
            error = _first(failed)
            task = asyncio.current_task()
            cancelled = task is not None and task.cancelling() > 0
            del task
        except BaseException as other:  # the block's own exception, or the cancellation: passed on
            _clear_exit_frame(other)
            del other
            raise
        finally:
            release_task_group(group)
            del group, exc, tb
        raising = error
        if cancelled:
            # Cancelled from outside while a task failed (often because of the same event, e.g. a hang-up
            # failing the playback): the cancellation wins, as it would have without the failure.
            raising = asyncio.CancelledError()
            raising.__cause__ = error
            raising.__suppress_context__ = True
        # Raised with the context it had: raised inside the `except` above, it would take the group that
        # contains it as its context (a cycle), here the block's exception. And no local of this frame may
        # hold it (its traceback holds this frame).
        context = raising.__context__
        del error
        try:
            raise raising
        except BaseException as raised:
            del raising
            raised.__context__ = context
            del context
            raise


def release_task_group(group: asyncio.TaskGroup) -> None:
    """What a finished `asyncio.TaskGroup` still holds and no longer needs: its parent task (a frame of
    which holds the group) and its errors (whose tracebacks hold that frame). (Fixed upstream, CPython gh-128552.)"""
    group._parent_task = None  # type: ignore[attr-defined]
    group._errors = None  # type: ignore[attr-defined]
    group._base_error = None  # type: ignore[attr-defined]


_TASK_GROUP_EXIT = asyncio.TaskGroup.__aexit__.__code__


def _clear_exit_frame(error: BaseException) -> None:
    """Drop the locals of the `TaskGroup.__aexit__` frame `error` was raised through: in 3.11 they hold the
    exception it raises (the group, the block's exception, the cancellation it propagates), and the
    exception's traceback holds that frame. The frame has returned. (Fixed upstream, CPython gh-124958.)"""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is _TASK_GROUP_EXIT:
            tb.tb_frame.clear()
            return
        tb = tb.tb_next


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> list[BaseException]:
    """Cancel `tasks` (None and finished ones are fine) and wait until all have ended.

    Returns the exceptions they ended with other than their cancellation. The caller's own cancellation,
    arriving while it waits, propagates as usual.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    pending = [task for task in live if not task.done()]
    if pending:
        await asyncio.wait(pending)
    errors: list[BaseException] = []
    for task in live:
        if task.done() and not task.cancelled():
            exc = task.exception()
            if exc is not None:
                errors.append(exc)
    return errors
