"""The table in docs/reliability.md and the parametrised cases of the matrix never drift apart."""

from __future__ import annotations

from tests.reliability import test_matrix
from tests.reliability.cases import CASES
from tests.reliability.registry import CHECKS
from tests.reliability.table import DOC, markdown, read_table


def expected_results() -> dict[str, str]:
    """What each case gives: passed, or failed where a fix is known to be missing (a strict xfail)."""
    return {c.id: "failed" if c.known_failure else "passed" for c in CASES}


def test_every_case_has_one_check_and_one_parametrised_id():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), "a case id is used twice"
    assert sorted(CHECKS) == sorted(ids)
    assert [p.id for p in test_matrix.PARAMS] == ids


def test_the_doc_table_lists_the_parametrised_cases_with_their_counts():
    rows, (tried, passed, failed) = read_table(DOC.read_text())
    assert [case_id for case_id, _ in rows] == [p.id for p in test_matrix.PARAMS]
    assert tried == len(test_matrix.PARAMS) and passed + failed == tried
    assert dict(rows) == expected_results(), "rerun: python -m tests.reliability.table"
    assert (passed, failed) == (sum(r == "passed" for _, r in rows), sum(r == "failed" for _, r in rows))


def test_the_doc_table_says_what_the_cases_say():
    text = DOC.read_text()
    assert markdown(expected_results()) in text, "the table's wording differs from cases.py: rerun the table script"
