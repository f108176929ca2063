"""`tumorlab report`: its parser and what it runs (tumorlab.evaluation.report, imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _report(ns: argparse.Namespace) -> int:
    from tumorlab.cli.lightning import run_predict
    from tumorlab.cli.quiet import quiet_known_noise
    from tumorlab.evaluation.report import write_report

    quiet_known_noise()
    path = write_report(ns.run_dir, slice_panel=not ns.no_slices, predict=run_predict)
    print(f"report: {path}\nmetrics: {path.with_name('metrics.json')}\nfigures: {path.with_name('figures')}")
    return 0


def add_parser(sub) -> None:
    """Add ``report`` to the subcommands ``sub``."""
    report = sub.add_parser(
        "report",
        help="write a run's metrics.json, figures and report.md, recomputed from its predictions.csv",
        description="Recompute a run's metrics from its predictions.csv as the test logged them (overall, per class, "
        "confusion matrix, per patient for segmentation) and draw its figures (confusion matrix, ROC and "
        "precision-recall curves, training curves, per-patient Dice, best/median/worst slices) into the run "
        "folder, with report.md. A folder without predictions.csv gets one from `tumorlab predict` first.",
    )
    report.add_argument("run_dir", help="a test run folder (runs/<name>/<time>_test) or a fit run folder")
    report.add_argument(
        "--no-slices", action="store_true", help="skip the slice panel (it loads the model and its data)"
    )
    report.set_defaults(func=_report)
