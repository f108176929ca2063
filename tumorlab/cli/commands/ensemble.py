"""`tumorlab ensemble`: its parser and what it runs (tumorlab.evaluation.ensemble, imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _ensemble(ns: argparse.Namespace) -> int:
    import json

    from tumorlab.cli.lightning import run_predict
    from tumorlab.cli.quiet import quiet_known_noise
    from tumorlab.evaluation.ensemble import run_ensemble
    from tumorlab.evaluation.report import write_report

    quiet_known_noise()
    argv = ["ensemble", *ns.runs, "--tta", ns.tta, "--split", ns.split, "--root", ns.root, "--name", ns.name]
    run_dir = run_ensemble(ns.runs, tta=ns.tta, split=ns.split, root=ns.root, name=ns.name, argv=argv)
    report = write_report(run_dir, slice_panel=not ns.no_slices, predict=run_predict)
    record = json.loads((run_dir / "run.json").read_text())
    metrics = record.get(f"{ns.split}_metrics") or {}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "_" not in k)
    print(f"ensemble of {len(record['members'])} runs (tta: {ns.tta}), {ns.split} split: {shown}")
    print(f"run folder: {run_dir}\nreport: {report}")
    return 0


def add_parser(sub) -> None:
    """Add ``ensemble`` to the subcommands ``sub``."""
    ensemble = sub.add_parser(
        "ensemble",
        help="evaluate several runs (or a cv folder's fold runs) as one model: averaged probabilities, flip TTA",
        description="Rebuild every run as it was trained, average their class probabilities (segmentation: per "
        "pixel too), optionally also over the left-right flipped image (--tta flip), and score the average on "
        "the test (or validation) split with the task's own metrics. The runs must agree on task, classes, "
        "preprocessing and the evaluated data. Writes a run folder <root>/<name>/<time>_ensemble/ with "
        "config.yaml, run.json (the members and augmentations), predictions.csv and the report.",
    )
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or a tumorlab cv folder (its fold runs)")
    ensemble.add_argument("--tta", choices=("none", "flip"), default="none", help="test-time augmentation")
    ensemble.add_argument("--split", choices=("test", "val"), default="test", help="the split scored (default test)")
    ensemble.add_argument("--root", default="runs", help="run root of the ensemble's folder (default runs)")
    ensemble.add_argument("--name", default="ensemble", help="experiment name of its folder (default ensemble)")
    ensemble.add_argument("--no-slices", action="store_true", help="skip the report's slice panel (segmentation)")
    ensemble.set_defaults(func=_ensemble)
