"""Run the bad-input matrix and write its table and counts into ``docs/reliability.md``.

    python -m tests.reliability.table            # every row, the slow ones too (about a minute on 2 cores)

The table sits between the ``matrix:start`` and ``matrix:end`` markers; the text around it is kept.
``test_table.py`` checks that the table and ``cases.CASES`` agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.reliability.cases import CASES

__all__ = ["DOC", "COMMAND", "markdown", "read_table", "run_matrix"]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
COMMAND = "python -m tests.reliability.table"
START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"
RESULTS = ("passed", "failed")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(results: dict[str, str]) -> str:
    """The table (one row per case, in ``CASES`` order) and the counts line, from ``{id: passed|failed}``."""
    lines = ["| case | group | bad input | what the user sees | result |", "|---|---|---|---|---|"]
    for case in CASES:
        lines.append(
            f"| `{case.id}` | {case.group} | {_cell(case.bad_input)} | {_cell(case.user_sees)} | {results[case.id]} |"
        )
    passed = sum(results[c.id] == "passed" for c in CASES)
    failed = len(CASES) - passed
    counts = f"**{len(CASES)} cases tried, {passed} passed, {failed} failed** (measured by `{COMMAND}`)."
    return "\n".join([counts, "", *lines, "", counts])


def read_table(text: str) -> tuple[list[tuple[str, str]], tuple[int, int, int]]:
    """``([(id, result) per table row], (tried, passed, failed))`` from the text of ``docs/reliability.md``."""
    body = text.split(START, 1)[1].split(END, 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \|.*\| (\w+) \|$", body, flags=re.MULTILINE)
    counts = re.search(r"\*\*(\d+) cases tried, (\d+) passed, (\d+) failed\*\*", body)
    assert counts, "no counts line in the matrix section"
    return rows, tuple(int(n) for n in counts.groups())  # type: ignore[return-value]


class _Outcomes:
    """A pytest plugin that records each case's outcome: ``passed``, or ``failed`` (an xfail counts as failed)."""

    def __init__(self) -> None:
        self.results: dict[str, str] = {}

    def pytest_runtest_logreport(self, report) -> None:
        found = re.search(r"\[(.+)\]$", report.nodeid)
        if found is None:
            return
        if report.when == "call":
            ok = report.passed and not hasattr(report, "wasxfail")
            self.results[found.group(1)] = "passed" if ok else "failed"
        elif report.failed:  # an error in setup or teardown
            self.results[found.group(1)] = "failed"


def run_matrix(extra: list[str] | None = None) -> dict[str, str]:
    """Run every case (slow ones included); ``{id: passed|failed}``."""
    import pytest

    outcomes = _Outcomes()
    pytest.main(
        [str(Path(__file__).with_name("test_matrix.py")), "-q", "-p", "no:cacheprovider", *(extra or [])],
        plugins=[outcomes],
    )
    return {c.id: outcomes.results.get(c.id, "failed") for c in CASES}


def write(results: dict[str, str], doc: Path = DOC) -> None:
    """Put the table of ``results`` between the markers of ``doc``."""
    text = doc.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{START}\n{markdown(results)}\n{END}{tail}")


if __name__ == "__main__":
    results = run_matrix(sys.argv[1:])
    write(results)
    failed = [k for k, v in results.items() if v != "passed"]
    print(f"{DOC}: {len(results)} cases, {len(results) - len(failed)} passed; failed: {', '.join(failed) or 'none'}")
