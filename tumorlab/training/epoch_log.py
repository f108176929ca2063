"""Per-epoch metrics without W&B: ``metrics.csv`` (one row per epoch), ``curves.png``, one line per epoch.

Written by hand because Lightning's ``CSVLogger`` writes one row per logging step, with the epoch's metrics
on rows of their own; a researcher wants one row per epoch, and a log file (SLURM, CI) one line per epoch
instead of a progress bar redrawn per batch.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["CURVES_FILE", "METRICS_FILE", "EpochMetrics", "plot_curves"]

METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"


def _epoch_values(trainer: Trainer) -> dict[str, float]:
    """The epoch-level values of every logged metric (``x_epoch`` named ``x``; per-step values left out)."""
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.endswith("_step"):
            continue
        name = key[: -len("_epoch")] if key.endswith("_epoch") else key
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class EpochMetrics(Callback):
    """Write ``metrics.csv`` in the run folder after every epoch and ``curves.png`` when ``fit`` ends.

    Args:
        print_lines: also print one line per epoch (the ``tumorlab`` command turns this on, and the progress
            bar off, when its output is not a terminal).
    """

    def __init__(self, print_lines: bool = False) -> None:
        self.print_lines = print_lines
        self.rows: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook, so val/ metrics are in callback_metrics.
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **_epoch_values(trainer)}
        self.rows.append(row)
        self._write(Path(trainer.default_root_dir) / METRICS_FILE)
        if self.print_lines:
            print(
                _line(row, trainer.max_epochs, time.perf_counter() - self._start, getattr(pl_module, "monitor", None))
            )

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            plot_curves(Path(trainer.default_root_dir) / METRICS_FILE, getattr(pl_module, "monitor", None))

    def _write(self, path: Path) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


def _line(row: dict[str, float], max_epochs: int | None, seconds: float, monitor: str | None) -> str:
    shown = ["train/loss", "val/loss"] + ([monitor] if monitor and monitor not in ("train/loss", "val/loss") else [])
    parts = [f"{k} {row[k]:.4g}" for k in shown if k in row and not math.isnan(row[k])]
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return f"epoch {int(row['epoch']) + 1}{total}: " + ", ".join(parts) + f" ({seconds:.1f} s)"


def plot_curves(metrics_csv: str | Path, monitor: str | None = None, png_path: str | Path | None = None) -> Path | None:
    """Draw the loss and the monitored metric, train and validation, over epochs from ``metrics.csv``.

    Returns the PNG's path (default: ``curves.png`` beside the CSV), or ``None`` when there is nothing to draw.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend stays as it was
    from matplotlib.ticker import MaxNLocator

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    name = (monitor or "val/loss").split("/", 1)[-1]
    panels = ["loss"] + ([name] if name != "loss" else [])

    def series(key: str) -> tuple[list[int], list[float]]:
        pairs = [(int(r["epoch"]) + 1, float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    if not any(series(f"{split}/{m}")[0] for m in panels for split in ("train", "val")):
        return None
    fig = Figure(figsize=(5 * len(panels), 3.6), dpi=120)
    axes = fig.subplots(1, len(panels), squeeze=False)
    epochs = sorted({int(r["epoch"]) + 1 for r in rows})
    for ax, metric in zip(axes[0], panels, strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            x, y = series(f"{split}/{metric}")
            if x:
                ax.plot(x, y, style, markersize=3, label=split)
        ax.set_xlabel("epoch")
        if len(epochs) <= 10:  # whole epochs only, also around a single point (a one-epoch run)
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.subplots_adjust(left=0.2 / len(panels), right=0.98, bottom=0.15, top=0.9, wspace=0.3)  # tight_layout: 2x
    png_path = Path(png_path) if png_path else Path(metrics_csv).with_name("curves.png")
    fig.savefig(png_path)
    return png_path
