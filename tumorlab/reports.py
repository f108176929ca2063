"""What a run writes for people: the metrics table, the prediction file and the figures of its folder.

The ``tumorlab`` command calls these; the figures are also logged to W&B. Only the confusion matrix is
drawn so far.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["format_metrics", "gather_rows", "plot_confusion_matrix", "prediction_rows", "write_predictions"]

_ORDER = ("dice", "iou", "acc", "f1", "auroc", "loss", "loss_seg", "loss_cls")


def format_metrics(metrics: dict[str, float], title: str, run_dir: Path) -> str:
    """A plain two-column table, the main metrics first."""
    keys = [k for k in _ORDER if k in metrics] + sorted(k for k in metrics if k not in _ORDER)
    width = max([len(k) for k in keys] + [6])
    lines = [f"{title}:", *(f"  {k:<{width}}  {metrics[k]:.4f}" for k in keys), f"run folder: {run_dir}"]
    return "\n".join(lines)


def prediction_rows(batches: list[dict]) -> list[dict]:
    """One dict per slice of ``predict_step`` outputs: patient, image, class probabilities, tumour area."""
    rows = []
    for batch in batches:
        probs = batch["class_prob"]
        for i in range(probs.shape[0]):
            row = {
                "patient": batch["patient"][i],
                "image": batch["image_path"][i],
                "predicted_class": int(probs[i].argmax()),
            }
            row.update({f"prob_{c}": float(p) for c, p in enumerate(probs[i])})
            if "mask_prob" in batch:
                row["tumour_pixels"] = int((batch["mask_prob"][i] > 0.5).sum())
            rows.append(row)
    return rows


def gather_rows(rows: list[dict]) -> list[dict] | None:
    """All processes' prediction rows on rank zero, in data-set order (``None`` on the other ranks).

    Evaluation loaders give process ``r`` of ``W`` the samples ``r, r + W, r + 2W ...``
    (``UnrepeatedDistributedSampler``, no shuffling), so interleaving the ranks' lists restores the order.
    Every process must call this.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    world, rank = dist.get_world_size(), dist.get_rank()
    parts: list | None = [None] * world if rank == 0 else None
    dist.gather_object(rows, parts, dst=0)
    if rank != 0:
        return None
    longest = max(len(p) for p in parts)
    return [p[k] for k in range(longest) for p in parts if k < len(p)]


def write_predictions(rows: list[dict], run_dir: Path) -> Path:
    """Write the rows to ``run_dir/predictions.csv`` (one row per slice)."""
    import csv

    path = Path(run_dir) / "predictions.csv"
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def plot_confusion_matrix(json_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Draw ``confusion_matrix.json`` (rows: true class, columns: predicted) as counts with row percentages.

    Returns the PNG's path (default: beside the JSON file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    record = json.loads(Path(json_path).read_text())
    matrix = np.asarray(record["matrix"], dtype=float)
    names = record["class_names"]
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 1.2 * len(names) + 1.5), dpi=120)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(matrix[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_title(f"confusion matrix ({int(matrix.sum())} samples)")
    fig.tight_layout()
    png_path = Path(png_path) if png_path else Path(json_path).with_suffix(".png")
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
