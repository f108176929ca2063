"""What ``fit`` records once training starts: the split counts (one printed line and ``run.json``'s ``splits``) and
the parameter counts as training sees them.

The counts that ``instantiate_classes`` writes come before ``fit``: fine-tuning callbacks (``GradualUnfreezing``,
any ``BaseFinetuning``) freeze in their ``setup``, so only at ``on_fit_start`` does ``requires_grad`` say what
trains, and an unfreezing schedule changes it again by the end (``trainable_at_end``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from tumorlab.runs.folders import update_run_json

__all__ = ["FitRecord", "split_line", "split_record"]


def split_record(datamodule: Any) -> dict[str, dict] | None:
    """``{split: {samples, patients, classes}}`` of a set-up tumorlab DataModule, with the names of its units;
    ``None`` for a DataModule that cannot say."""
    describe = getattr(datamodule, "describe_splits", None)
    if not callable(describe):
        return None
    samples, groups = getattr(datamodule, "split_units", ("samples", "groups"))
    splits = describe()
    return {"units": {"samples": samples, "patients": groups}, **splits}


def split_line(record: dict[str, Any]) -> str:
    """One line: ``data: train 812 slices of 24 patients (no_tumour 500, tumour 312); val ...; test ...``."""
    units = record.get("units", {"samples": "samples", "patients": "groups"})
    parts = []
    for name, split in record.items():
        if name == "units":
            continue
        classes = ", ".join(f"{c} {n}" for c, n in split.get("classes", {}).items())
        parts.append(
            f"{name} {split['samples']:,} {units['samples']} of {split['patients']:,} {units['patients']}"
            + (f" ({classes})" if classes else "")
        )
    return "data: " + "; ".join(parts)


class FitRecord(Callback):
    """At fit start, print the split line and write ``splits`` and ``parameters`` (total, trainable) into
    ``run.json``; at fit end add ``parameters.trainable_at_end``. Rank zero only."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._start: dict[str, int] | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = split_record(trainer.datamodule)
        if record is not None:
            print(split_line(record), flush=True)
            update_run_json(self.run_dir, splits=record)
        counts = getattr(pl_module, "parameter_counts", None)
        if callable(counts):
            self._start = counts()
            update_run_json(self.run_dir, parameters=self._start)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        counts = getattr(pl_module, "parameter_counts", None)
        if trainer.is_global_zero and callable(counts) and self._start is not None:
            update_run_json(self.run_dir, parameters={**self._start, "trainable_at_end": counts()["trainable"]})
