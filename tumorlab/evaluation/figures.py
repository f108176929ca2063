"""The figures of a run report (PNG): confusion matrix, ROC and precision-recall
curves, per-patient Dice and the best, median and worst test slices with their mask outlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["new_figure", "plot_confusion", "plot_patient_dice", "plot_roc_pr", "plot_slices"]


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure`` (``figsize``, ``dpi`` ...) outside pyplot: saving it as PNG uses the Agg
    renderer of its own, so drawing neither needs nor changes the process's backend (a notebook's stays)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path) -> Path:
    """Counts (left) and row-normalised shares (right; each true class sums to 1)."""
    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 1.2 * len(names) + 2
    fig = new_figure(figsize=(2 * side + 1, side), dpi=110)
    axes = fig.subplots(1, 2)
    for ax, values, title, fmt in (
        (axes[0], counts, "counts", lambda v: f"{int(v)}"),
        (axes[1], share, "row-normalised (recall per class)", lambda v: f"{v:.2f}"),
    ):
        scale = values / max(values.max(), 1e-12)
        ax.imshow(scale, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        for i in range(len(names)):
            for j in range(len(names)):
                colour = "white" if scale[i, j] > 0.5 else "black"
                ax.text(j, i, fmt(values[i, j]), ha="center", va="center", color=colour)
    fig.suptitle(f"confusion matrix ({int(counts.sum())} samples)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_roc_pr(y_true: np.ndarray, probs: np.ndarray, names: list[str], path: Path) -> Path:
    """One-vs-rest ROC curves with their AUC (left) and precision-recall curves with average precision
    (right), one line per class; a class without positives or negatives is named in the legend as undefined."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fig = new_figure(figsize=(10, 4.2), dpi=110)
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    for c, name in enumerate(names):
        y = (y_true == c).astype(int)
        if y.min() == y.max():
            for ax in (roc_ax, pr_ax):
                ax.plot([], [], label=f"{name}: undefined (one class present)")
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        roc_ax.plot(fpr, tpr, label=f"{name}: AUC {roc_auc_score(y, probs[:, c]):.3f}")
        precision, recall, _ = precision_recall_curve(y, probs[:, c])
        pr_ax.step(recall, precision, where="post", label=f"{name}: AP {average_precision_score(y, probs[:, c]):.3f}")
    for ax, (x, y), title in (
        (roc_ax, ("false positive rate", "true positive rate"), "ROC (one vs rest)"),
        (pr_ax, ("recall", "precision"), "precision-recall"),
    ):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is roc_ax else "lower left")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_patient_dice(patients: dict[str, dict[str, Any]], path: Path) -> Path:
    """Per-patient Dice as a box plot with one dot per patient: the volume Dice where predictions.csv has the
    pixel counts, and the mean slice Dice (all slices; tumour slices)."""
    groups = {
        "volume Dice": [v["dice"] for v in patients.values() if v.get("dice") is not None],
        "mean slice Dice": [v["mean_slice_dice"] for v in patients.values()],
        "mean slice Dice, tumour slices": [
            v["mean_slice_dice_tumour"] for v in patients.values() if v["mean_slice_dice_tumour"] is not None
        ],
    }
    groups = {k: v for k, v in groups.items() if v}
    fig = new_figure(figsize=(2.2 * len(groups) + 2, 4), dpi=110)
    ax = fig.subplots()
    ax.boxplot(list(groups.values()), showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), list(groups))
    jitter = np.random.default_rng(0)
    for k, values in enumerate(groups.values(), start=1):
        ax.scatter(k + jitter.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.8, zorder=3)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("mean per-slice Dice of the patient")
    ax.set_title(f"Dice per patient ({len(patients)} patients)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_slices(slices: list[dict[str, Any]], path: Path) -> Path:
    """One column per slice: the FLAIR channel with the true (green) and predicted (red) mask outlines.

    Each entry holds ``title``, ``image`` (2-D array), ``true`` and ``pred`` (2-D boolean masks).
    """
    fig = new_figure(figsize=(3.4 * len(slices), 3.8), dpi=110)
    axes = fig.subplots(1, len(slices), squeeze=False)
    for ax, item in zip(axes[0], slices, strict=True):
        ax.imshow(item["image"], cmap="gray")
        for mask, colour in ((item["true"], "lime"), (item["pred"], "red")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.2)
        ax.set_title(item["title"], fontsize=8)
        ax.axis("off")
    fig.suptitle("FLAIR with true (green) and predicted (red) tumour outlines")
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # room for the title above the two-line slice titles
    fig.savefig(path)
    return path
