"""The bad-input matrix: one case per row of ``cases.CASES``, each run through the ``tumorlab`` command.

A row passes when the command ends as the table says: one ``tumorlab: error:`` line naming the file, key,
batch or step and the cause (exit 2, no traceback), a counted skip where ``on_bad_file: skip`` asked for it,
or a run that works where the input is odd but valid.
"""

from __future__ import annotations

import pytest

from tests.reliability import rows_data, rows_runs, rows_safety  # noqa: F401  (register the checks)
from tests.reliability.cases import CASES
from tests.reliability.registry import CHECKS, Ctx


def _marks(case) -> list:
    marks = [pytest.mark.slow] if case.slow else []
    if case.known_failure:
        marks.append(pytest.mark.xfail(strict=True, reason=case.known_failure))
    return marks


PARAMS = [pytest.param(case, id=case.id, marks=_marks(case)) for case in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input(case, tmp_path, cli, caplog, monkeypatch, request):
    CHECKS[case.id](Ctx(tmp_path, cli, caplog, monkeypatch, request))
