"""Where each row of the matrix (``cases.CASES``) gets the check that runs it: ``@row("<id>")``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Ctx", "CHECKS", "row"]


@dataclass
class Ctx:
    """What a row's check gets: a private folder, the in-process ``tumorlab`` runner and pytest's helpers."""

    tmp_path: Path
    cli: Callable[..., Any]
    caplog: Any
    monkeypatch: Any
    request: Any

    def fixture(self, name: str) -> Any:
        """A (session) fixture that only some rows need, built on first use."""
        return self.request.getfixturevalue(name)


CHECKS: dict[str, Callable[[Ctx], None]] = {}


def row(case_id: str) -> Callable[[Callable[[Ctx], None]], Callable[[Ctx], None]]:
    """Register the decorated function as the check of row ``case_id``."""

    def register(check: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        assert case_id not in CHECKS, f"two checks for row {case_id}"
        CHECKS[case_id] = check
        return check

    return register
