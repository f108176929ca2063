"""``tumorlab ensemble RUN [RUN ...] [--tta flip] [--split test]``: several trained runs evaluated as one model.

The members are run folders (fit or test runs) or a ``tumorlab cv`` folder (``<name>-cv`` or one of its
``<time>_cv`` summaries: its fold runs). Each is rebuilt by ``loading.load_run`` exactly as it was trained; their
class probabilities (and, for segmentation, per-pixel tumour probabilities) are averaged by
``tumorlab.models.ensemble.EnsembleNet``, optionally also over left-right flipped copies of every image
(``--tta flip``), as nnU-Net combines its folds.

Before anything is computed, the members must agree on what decides the numbers: the task, the classes, the
preprocessing (data module, image size, channels, normalisation, brain crop) and the data of the evaluated
split (root, test root, manifest, split fractions, seed, held-out group; for ``--split val`` also the fold);
where members carry a ``predictions.csv`` of that split, it must list the same images. Otherwise the command
stops with one line naming the key and two runs that differ.

The ensemble is a run folder like any other, ``<root>/<name>/<time>_ensemble/``: ``config.yaml`` (the first
member's config with an ``ensemble`` section naming the members and augmentations), ``run.json`` (``members``
with their checkpoints, ``tta``, ``split``, ``<split>_metrics`` from the task's own torchmetrics test pass),
``predictions.csv``, and ``report.md`` / ``metrics.json`` / ``figures/`` by ``tumorlab report``. ``compare``
reads it as it reads any run; ``load_run`` (and so ``cam`` and the report's slice panel) rebuilds the ensemble.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tumorlab.errors import ConfigError, DataError
from tumorlab.runs.load import is_run_dir, read_predictions, read_run

__all__ = ["TTA_CHOICES", "ensemble_members", "check_members", "run_ensemble"]

# --tta choice -> the EnsembleNet augmentations (flip: the left-right mirror image; brains are roughly symmetric)
TTA_CHOICES = {"none": (), "flip": ("hflip",)}
# Keys of config.yaml that every member must share (what the network sees, and which samples are scored).
_SAME_TASK = ("model.class_path",)
_SAME_PREPROCESSING = ("data.class_path", "data.init_args.image_size", "data.init_args.channels",
                       "data.init_args.normalize", "data.init_args.brain_crop", "data.init_args.task")  # fmt: skip
_SAME_DATA = ("data.init_args.root", "data.init_args.test_root", "data.init_args.csv", "data.init_args.split",
              "data.init_args.seed", "data.init_args.test_group_by", "data.init_args.test_group",
              "data.init_args.drop_edge_slices", "data.init_args.duplicates", "data.init_args.classes",
              "data.init_args.binary")  # fmt: skip
_SAME_FOLD = ("data.init_args.num_folds", "data.init_args.fold")


def _fold_runs_of_cv(folder: Path) -> list[Path]:
    """The fold runs of a cv folder: those its newest ``*_cv`` summary lists (a summary folder: its own)."""
    own = folder / "summary.json"
    summaries = [own] if own.is_file() else list(folder.glob("*_cv*/summary.json"))
    if not summaries:
        return []
    newest = max(summaries, key=lambda p: p.stat().st_mtime)
    return [Path(f["run"]) for f in json.loads(newest.read_text())["folds"]]


def ensemble_members(paths: Sequence[str | Path]) -> list[Path]:
    """The member run folders of ``paths``: each a run folder, or a cv folder standing for its fold runs."""
    members: list[Path] = []
    for path in map(Path, paths):
        if is_run_dir(path):
            members.append(path.resolve())
            continue
        folds = _fold_runs_of_cv(path) if path.is_dir() else []
        if not folds:
            raise DataError(f"{path}: neither a run folder (config.yaml, run.json) nor a tumorlab cv folder")
        members += [f.resolve() for f in folds]
    if len(set(members)) != len(members):
        twice = next(m for m in members if members.count(m) > 1)
        raise ConfigError(f"{twice} is named twice; an ensemble counts each run once")
    return members


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def check_members(configs: Sequence[dict], runs: Sequence[Path], class_names: Sequence[list], split: str) -> None:
    """Stop (one line) where two members disagree on the task, classes, preprocessing or evaluated data."""
    groups = [("task", _SAME_TASK), ("preprocessing", _SAME_PREPROCESSING), ("data", _SAME_DATA)]
    if split == "val":
        groups.append(("validation fold (--split val needs one validation split)", _SAME_FOLD))
    for what, keys in groups:
        for key in keys:
            for config, run in zip(configs[1:], runs[1:], strict=True):
                mine, theirs = _get(configs[0], key), _get(config, key)
                if json.dumps(mine, sort_keys=True) != json.dumps(theirs, sort_keys=True):
                    raise ConfigError(
                        f"ensemble members disagree on the {what}: {key} is {mine!r} in {runs[0]} but {theirs!r} "
                        f"in {run}"
                    )
    for names, run in zip(class_names[1:], runs[1:], strict=True):
        if list(names) != list(class_names[0]):
            raise ConfigError(
                f"ensemble members disagree on the classes: {class_names[0]} in {runs[0]}, {names} in {run}"
            )


def _check_same_images(runs: Sequence[Path], dataset, split: str) -> None:
    """Where a member's predictions.csv holds the split, it must list exactly the images scored here."""
    here = {str(s.image) for s in dataset.samples}
    for run in runs:
        path = run / "predictions.csv"
        if not path.is_file():
            continue
        rows = [r for r in read_predictions(path) if r.get("split", split) == split]
        theirs = {r["file"] for r in rows}
        if theirs and theirs != here:
            other = sorted(theirs ^ here)[0]
            raise DataError(
                f"{run}: its {split} split is not the one scored here ({len(theirs)} vs {len(here)} images, e.g. "
                f"{other}); the members were not split alike"
            )


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up lines (GPU available ...) say nothing about an ensemble on the CPU."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _split_data(datamodule, split: str):
    """A DataModule whose test loader serves ``split`` of ``datamodule`` (the test pass scores any split)."""
    from lightning.pytorch import LightningDataModule

    class SplitData(LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.class_names, self.num_classes = datamodule.class_names, datamodule.num_classes

        def class_weights(self):
            return datamodule.class_weights()

        def test_dataloader(self):
            return datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()

    return SplitData()


def run_ensemble(
    paths: Sequence[str | Path],
    tta: str = "none",
    split: str = "test",
    root: str | Path = "runs",
    name: str = "ensemble",
    argv: Sequence[str] = (),
) -> Path:
    """Evaluate the members of ``paths`` as one model on ``split``; return the new ensemble run folder.

    Nothing is written when the members are refused.
    """
    from lightning.pytorch import Trainer

    from tumorlab.evaluation.rows import TestPredictions
    from tumorlab.models.ensemble import ensemble_task
    from tumorlab.runs.folders import new_run_dir, run_info, update_run_json
    from tumorlab.runs.load import load_run

    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, got {split!r}")
    runs = ensemble_members(paths)
    folders = [read_run(r) for r in runs]
    configs = [f.config for f in folders]
    loaded = [load_run(r) for r in runs]
    check_members(configs, runs, [lr.datamodule.class_names for lr in loaded], split)
    recorded = [f.record.get("preprocessing") for f in folders]  # what the fits fed the networks, as recorded
    for pre, run in zip(recorded[1:], runs[1:], strict=True):
        if pre != recorded[0]:
            raise ConfigError(
                f"ensemble members disagree on the preprocessing: {recorded[0]} in {runs[0]}, {pre} in {run}"
            )
    datamodule = loaded[0].datamodule
    datamodule.setup("test")
    _check_same_images(runs, datamodule.datasets[split], split)
    augmentations = TTA_CHOICES[tta]
    host = ensemble_task([lr.task for lr in loaded], augmentations)
    members = [{"run": str(lr.run_dir), "checkpoint": str(lr.checkpoint)} for lr in loaded]
    run_dir = new_run_dir(root, name, "ensemble")
    run_dir.mkdir(parents=True)
    config = configs[0] | {"ensemble": {"members": [m["run"] for m in members], "tta": list(augmentations)}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    inherited = {k: folders[0].record[k] for k in ("preprocessing", "class_names") if k in folders[0].record}
    record = run_info("ensemble", list(argv)) | inherited
    record |= {"members": members, "tta": list(augmentations), "split": split}
    (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    with _quiet_lightning():
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[TestPredictions(run_dir)], default_root_dir=str(run_dir))  # fmt: skip
        (result,) = trainer.test(host, datamodule=_split_data(datamodule, split), verbose=False)
    metrics = {k.removeprefix("test/"): float(v) for k, v in result.items() if k.startswith("test/")}
    update_run_json(run_dir, **{f"{split}_metrics": metrics}, parameters=host.parameter_counts())
    return run_dir
