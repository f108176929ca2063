"""`tumorlab compare`: its parser and what it runs (tumorlab.evaluation.compare, imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _compare(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.compare import compare_runs

    result = compare_runs(ns.run_dirs, sort=ns.sort or None, out_dir=ns.out)
    print(result.markdown.read_text(), end="")
    written = [result.markdown, result.csv] + ([result.png] if result.png else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_parser(sub) -> None:
    """Add ``compare`` to the subcommands ``sub``."""
    compare = sub.add_parser(
        "compare",
        help="put runs side by side: one row per run as Markdown, CSV and a bar chart",
        description="One row per run (fit or test folder): model, data, train/val accuracy and loss at the "
        "best epoch of metrics.csv, the test metrics of run.json, parameters, training time and epochs. Runs "
        "on other data are flagged in the data_check column; folders that are not runs are skipped with a warning.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; quoted globs are expanded")
    compare.add_argument(
        "--sort", default="test/f1", help="column to sort by, best first (default test/f1; '' keeps the order)"
    )
    compare.add_argument("--out", default="comparison", help="folder for comparison.md/.csv/.png (default comparison)")
    compare.set_defaults(func=_compare)
