"""What a command records in its run folder's ``run.json``: at the start (the command, versions, preprocessing, what
is tested), once ``fit`` trains (the split counts, also printed as one line, and the parameter counts as training
sees them) and when ``fit`` ends (best checkpoint, epochs, train time, the last validation metrics).

The counts that ``instantiate_classes`` writes come before ``fit``: fine-tuning callbacks (``GradualUnfreezing``,
any ``BaseFinetuning``) freeze in their ``setup``, so only at ``on_fit_start`` does ``requires_grad`` say what
trains, and an unfreezing schedule changes it again by the end (``trainable_at_end``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from tumorlab.runs.folders import run_info, update_run_json

__all__ = ["FitRecord", "split_line", "split_record", "write_fit_record", "write_start_record"]


def write_start_record(cli: Any, cfg: Any, normalization: dict | None, mapping: Any) -> None:
    """``run.json`` as the command starts (rank zero): command and versions, parameter counts of the model as
    built, what the network is fed, the checkpoint resumed from or evaluated, and the data it is evaluated on."""
    counts = getattr(cli.model, "parameter_counts", None)
    dm = cli.datamodule
    preprocessing = {
        "image_size": getattr(dm, "image_size", None),
        "channels": getattr(dm, "channels", None),
        "normalization": normalization,
    }
    update_run_json(
        cli.run_dir,
        **run_info(cli.subcommand, cli.argv),
        parameters=counts() if callable(counts) else None,
        preprocessing=preprocessing,
    )
    resumed = cfg.get("ckpt_path") if cli.subcommand == "fit" else None
    if resumed:
        update_run_json(cli.run_dir, resumed_from=resumed)
    if cli.subcommand != "fit" and cfg.get("ckpt_path"):
        update_run_json(cli.run_dir, tested=str(cli.tested) if cli.tested else None, checkpoint=cfg.ckpt_path)
    if cli.tested is not None:
        from tumorlab.runs.crossdata import evaluation_record

        update_run_json(cli.run_dir, **evaluation_record(cli.tested, cfg.as_dict(), dm, mapping))


def write_fit_record(cli: Any, ckpt: Any, best: str | None) -> None:
    """``run.json`` when ``fit`` ends (rank zero): the training images' hashes (what a later test on other data is
    compared with), class names, the best checkpoint and its score, epochs, train time, last validation metrics."""
    from tumorlab.evaluation.nearcopies import write_train_hashes

    hashes = write_train_hashes(cli.datamodule, cli.run_dir)
    names = getattr(cli.datamodule, "class_names", None)
    update_run_json(cli.run_dir, class_names=names, train_hashes=str(hashes) if hashes else None)
    score = getattr(ckpt, "best_model_score", None)
    from tumorlab.evaluation.metrics import undefined_logged

    logged = {k[4:]: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    final, undefined = undefined_logged(logged, "val", cli.run_dir, cli.model)  # None where the data leaves it so
    update_run_json(
        cli.run_dir,
        best_checkpoint=best,
        best_score={getattr(ckpt, "monitor", None): float(score)} if score is not None else None,
        epochs=cli.trainer.current_epoch,
        train_time_s=getattr(cli.model, "train_time_s", None),
        final_val_metrics=final,
        final_val_undefined_metrics=undefined,
    )


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
