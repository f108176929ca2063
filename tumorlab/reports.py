"""Figures for papers and for the run's W&B page, drawn from what a run folder holds.

Only the confusion matrix exists so far; ROC curves and CAM panels join it with their issues.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_confusion_matrix"]


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
