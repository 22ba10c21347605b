"""What every component benchmark's process sets up the same way: warnings-only logs on stderr (the
results go to stdout) and the event loop the bridge runs on (uvloop, unless `--no-uvloop` asks for
asyncio's own to compare)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from bridge.server import run_event_loop

T = TypeVar("T")


def quiet_logs() -> None:
    """Only warnings and errors, on stderr."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def loop_runner(no_uvloop: bool) -> Callable[[Coroutine[Any, Any, T]], T]:
    """`asyncio.run` when asked for, else the bridge's own runner (uvloop when installed)."""
    return asyncio.run if no_uvloop else run_event_loop
