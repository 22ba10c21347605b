"""Every test under tests/perf asserts wall-clock timing that a loaded machine blurs: each is marked `perf`,
so the default run (`-m "not perf and not asterisk"`) leaves them out; run them with `-m perf` on a quiet
machine. Behaviour that must hold on any machine is tested in tests/unit or tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark before the marker expression deselects (tryfirst: ahead of pytest's own deselection)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.perf)
