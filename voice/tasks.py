"""Task hygiene for the whole project: `task_group` (structured concurrency) and `cancel_and_wait`.

`task_group()` is `asyncio.TaskGroup` for code that raises ordinary exceptions: when the block or a task
fails, the siblings are cancelled and waited for as usual, and the first failure is raised itself rather
than wrapped in an `ExceptionGroup` (callers catch `CallEnded`, `TTSError`, ... as they always did);
when the task running the block is being cancelled, the cancellation propagates, never a task's failure.


`task.cancel()` followed by `await task` inside `suppress(CancelledError)` also swallows the *awaiting*
task's own cancellation (a hang-up arriving during the wait would be lost, and the awaiting task would run
on). `asyncio.wait` never raises the awaited task's outcome, so only the awaiting task's own cancellation
propagates; the stopped task's exception, if it had one, is retrieved (not reported by the loop) and
returned for the caller to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["cancel_and_wait", "task_group"]


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An `asyncio.TaskGroup` that re-raises its first failure unwrapped (see the module docstring)."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failed:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            # Cancelled from outside while a task failed (often because of the same event, e.g. a hang-up
            # failing the playback): the cancellation wins, as it would have without the failure.
            raise asyncio.CancelledError() from _first(failed)
        raise _first(failed) from None


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
