"""The report of a run: ``metrics.json``, figures and ``report.md``, all from the run's ``predictions.csv``.

``tumorlab report RUN_DIR`` (a test or a fit run folder) and ``write_report(run_dir)`` write into the run folder:

- ``predictions.csv``: made first where the folder has none (see ``loading.predictions_of``); the source of
  every number below;
- ``metrics.json``: overall, per class, confusion matrix and, with segmentation (a ``dice`` column), per
  patient, recomputed with the torchmetrics definitions the test logs (``tumorlab.evaluation.metrics``);
- ``figures/``: ``confusion_matrix.png`` (counts and row-normalised), ``roc_pr.png`` (one-vs-rest ROC with
  AUC, precision-recall), ``training_curves.png`` (loss and the monitored metric per epoch, from the fit run's
  ``metrics.csv``), and with segmentation ``patient_dice.png`` and ``slices.png`` (the best, median and worst
  tumour slices by Dice, masks predicted again by the model);
- ``report.md``: data, model, parameters, training time, the tables and the figures.

A test on other data than the fit's (``tumorlab test --ckpt_path RUN --data.root OTHER``) also states which
data trained and which tested the model and the class mapping, and marks the test images that are near-copies
of the fit's training images (``tumorlab.evaluation.nearcopies``): predictions.csv gains
``near_copy_of_train`` and ``train_copy``, metrics.json ``near_copies`` (the count and the rule) and
``without_near_copies`` (every metric again on the other test images), and report.md shows both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tumorlab.errors import DataError
from tumorlab.evaluation.markdown import report_markdown
from tumorlab.evaluation.metrics import compute_metrics, parse_predictions
from tumorlab.evaluation.nearcopies import mark_near_copies
from tumorlab.runs.load import (
    PredictRunner,
    RunFolder,
    load_run,
    predictions_of,
    read_predictions,
    read_run,
)
from tumorlab.runs.predictions import write_predictions

__all__ = ["FIGURES_DIR", "figure_files", "log_figures", "pick_slices", "write_report"]

FIGURES_DIR = "figures"


def write_report(run_dir: str | Path, *, slice_panel: bool = True, predict: PredictRunner | None = None) -> Path:
    """Write ``metrics.json``, ``figures/*.png`` and ``report.md`` into ``run_dir``; return ``report.md``'s path.

    Args:
        run_dir: a ``test`` (or ``validate``/``predict``) run folder, or a ``fit`` run folder.
        slice_panel: draw ``slices.png`` for segmentation runs (loads the model and runs it on three slices).
        predict: how to run ``tumorlab predict`` where the folder has no ``predictions.csv`` (see
            ``loading.predictions_of``); ``None``: such a folder raises ``DataError`` with the command to run.

    The figures' paths are listed in ``metrics.json`` under ``figures`` (all of them lie in ``figures/``).
    """
    run = read_run(run_dir)
    csv_path, made_by = predictions_of(run, predict)
    every_row = read_predictions(csv_path)
    splits = sorted({r.get("split", "") for r in every_row})
    # `predict --data.predict_split all` writes train, val and test rows: the report scores the test rows only
    rows = [r for r in every_row if r.get("split") == "test"] if len(splits) > 1 and "test" in splits else every_row
    copies = mark_near_copies(run, rows)
    if copies is not None:  # predictions.csv gains the near_copy_of_train column
        write_predictions(every_row, csv_path.parent)
    parsed = parse_predictions(rows)
    if not len(parsed.y_true):
        raise DataError(f"{csv_path}: no row with a known true_class, nothing to score against")
    metrics = compute_metrics(parsed)
    if copies is not None:
        metrics["near_copies"] = copies
        metrics["without_near_copies"] = _metrics_without_copies(rows)
        print(
            f"near-copies of the training images: {copies['count']} of {copies['test_images']} test images "
            f"(perceptual hash within {copies['threshold_bits']} bits); report.md scores all and the others"
        )
    metrics["source"] = {
        "predictions": str(csv_path),
        "made_by_predict_run": str(made_by) if made_by else None,
        "rows": len(rows),
        "rows_in_file": len(every_row),
        "splits": sorted({r.get("split", "") for r in rows}),
    }
    out = run.path / FIGURES_DIR
    out.mkdir(exist_ok=True)
    figures = _draw(run, parsed, metrics, out)
    if slice_panel and parsed.dice is not None:
        try:
            panel, picked = _slice_panel(run, rows, out / "slices.png")
        except (OSError, RuntimeError, ValueError) as err:  # the model or its images cannot be loaded here
            print(f"tumorlab: warning: slice panel skipped: {err}", file=sys.stderr)
            panel, picked = None, []
            metrics["slice_panel_skipped"] = str(err)
        metrics["slice_panel"] = picked
        if panel is not None:
            figures["slices"] = panel
    metrics["figures"] = {k: str(v) for k, v in figures.items()}
    volumes = _volumes(run) if parsed.dice is not None else {}
    if volumes:
        metrics["volumes"] = volumes
    (run.path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    report = run.path / "report.md"
    text = report_markdown(run, metrics, {k: v.relative_to(run.path) for k, v in figures.items()})
    if volumes:
        from tumorlab.evaluation.volumes import volume_markdown

        text += volume_markdown(volumes)
    report.write_text(text)
    return report


def _volumes(run: RunFolder) -> dict:
    """The 3D scores of a run on volumes (``tumorlab.evaluation.volumes``); ``{}`` for 2D data."""
    data = (run.config.get("data") or {}).get("class_path", "")
    if not str(data).endswith("VolumeDataModule"):
        return {}
    from tumorlab.evaluation.volumes import evaluate_volumes, is_volume_segmentation

    task, dm = load_run(run.path)
    dm.setup("test")
    return evaluate_volumes(task, dm, run.path) if is_volume_segmentation(dm, task) else {}


def figure_files(run_dir: str | Path) -> list[Path]:
    """Every PNG under ``run_dir/figures`` (sub-folders too, e.g. CAM panels), sorted."""
    return sorted((Path(run_dir) / FIGURES_DIR).rglob("*.png"))


def log_figures(loggers: list[Any], figures: list[Path], prefix: str = "test") -> list[str]:
    """Hand each figure to every logger that takes images (``log_image``: W&B's logger), one image per key
    ``<prefix>/<name>`` (the path below ``figures/`` without ``.png``, e.g. ``test/roc_pr``); the keys."""
    keys = []
    for path in figures:
        parts = path.with_suffix("").parts
        below = parts[parts.index(FIGURES_DIR) + 1 :] if FIGURES_DIR in parts else (path.stem,)
        key = f"{prefix}/{'/'.join(below)}"
        for logger in loggers:
            if callable(getattr(logger, "log_image", None)):
                logger.log_image(key=key, images=[str(path)], caption=[path.stem])
        keys.append(key)
    return keys


def _metrics_without_copies(rows: list[dict]) -> dict[str, Any] | None:
    """The metrics of the rows that are no near-copy of a training image (``None`` where none is left)."""
    clean = [r for r in rows if not int(r.get("near_copy_of_train") or 0)]
    parsed = parse_predictions(clean) if clean else None
    return compute_metrics(parsed) if parsed is not None and len(parsed.y_true) else None


def _draw(run: RunFolder, parsed, metrics: dict[str, Any], out: Path) -> dict[str, Path]:
    from tumorlab.evaluation.figures import plot_confusion, plot_patient_dice, plot_roc_pr
    from tumorlab.training.epoch_log import plot_curves

    figures = {
        "confusion_matrix": plot_confusion(
            metrics["confusion_matrix"]["matrix"], parsed.names, out / "confusion_matrix.png"
        ),
        "roc_pr": plot_roc_pr(parsed.y_true, parsed.probs, parsed.names, out / "roc_pr.png"),
    }
    curves = run.fit_dir / "metrics.csv" if run.fit_dir else None
    if curves is not None and curves.is_file():
        fit_config = read_run(run.fit_dir).config
        monitor = (fit_config.get("model") or {}).get("init_args", {}).get("monitor")
        drawn = plot_curves(curves, monitor, out / "training_curves.png")
        if drawn is not None:
            figures["training_curves"] = Path(drawn)
    if metrics.get("per_patient"):
        figures["patient_dice"] = plot_patient_dice(metrics["per_patient"]["patients"], out / "patient_dice.png")
    return figures


def pick_slices(rows: list[dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    """The best, median and worst slice by ``dice`` among the tumour slices (true class other than
    ``no_tumour``), as ``(label, row)``; fewer where there are fewer than three tumour slices."""
    tumour = [r for r in rows if r.get("true_class") not in ("", "no_tumour") and r.get("dice") not in (None, "")]
    ranked = sorted(tumour, key=lambda r: float(r["dice"]))
    if not ranked:
        return []
    chosen = [("best", ranked[-1]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[0])]
    seen, unique = set(), []
    for label, row in chosen:
        if row["file"] not in seen:
            seen.add(row["file"])
            unique.append((label, row))
    return unique


def _slice_panel(run: RunFolder, rows: list[dict[str, str]], path: Path) -> tuple[Path | None, list[dict]]:
    """Predict the masks of the picked slices again with the run's model and draw them over FLAIR."""
    import torch

    from tumorlab.evaluation.figures import plot_slices
    from tumorlab.tasks.metrics import slice_dice

    picked = pick_slices(rows)
    if not picked:
        return None, []
    task, dm = load_run(run.path)
    dm.setup("test")
    channels = list(getattr(dm, "channels", None) or [0, 1, 2])
    flair = channels.index(1) if 1 in channels else 0  # kaggle_3m channel 1 is FLAIR
    items, record = [], []
    for label, row in picked:
        item = _dataset_item(dm, row)
        with torch.no_grad():
            out = task(item["image"][None])
        pred = (getattr(out, "mask_logits", out)[0, 0] > 0).numpy()
        true = (item["mask"][0] > 0.5).numpy()
        dice = float(slice_dice(torch.from_numpy(pred).reshape(1, -1), torch.from_numpy(true).reshape(1, -1))[0])
        name = Path(row["file"]).name
        items.append(
            {
                "title": f"{label}: {name}\nDice {dice:.3f}",
                "image": item["image"][flair].numpy(),
                "true": true,
                "pred": pred,
            }
        )
        record.append(
            {
                "label": label,
                "file": row["file"],
                "patient": row.get("patient"),
                "dice_csv": float(row["dice"]),
                "dice_recomputed": dice,
            }
        )
    return plot_slices(items, path), record


def _dataset_item(dm, row: dict[str, str]) -> dict:
    """The data module's item for ``row`` (normalised, never augmented), found by its file path."""
    split = row.get("split") or "test"
    dataset = dm.datasets[split]
    if split == "train":  # as predict_dataset: training images with the evaluation transform
        dataset = dataset.with_transform(dm.datasets["val"].transform)
    for k, sample in enumerate(dataset.samples):
        if str(sample.image) == row["file"]:
            return dataset[k]
    raise DataError(f"{row['file']}: not in the {split} split of the run's data (was the data root moved?)")
