"""Runs side by side: one row per run as Markdown, CSV and a bar chart (``tumorlab compare RUN_DIR ...``).

Where the numbers come from:

- ``train/*`` and ``val/*`` (accuracy, loss): the fit run's ``metrics.csv`` at the **best epoch**, the epoch
  whose monitored metric (``model.monitor``) is best, i.e. the one whose checkpoint is tested (the last
  epoch where the monitored column is missing); the ``epoch`` column names it (1-based);
- ``test/*``: the ``test_metrics`` the test command logged in ``run.json`` (of the test run, or of a fit
  run with ``--run.test_after_fit true``), torchmetrics' values with the same definitions as training's;
  ``test/dice`` is pooled over all test pixels, ``test/dice_volume`` per patient (``VolumeDice``);
- parameters, training time and epochs: ``run.json`` of the run and of its fit run.

Runs whose data differ (data module, root or CSV, classes, binary, seed, split, folds, fold) are flagged in the
``data_check`` column against the data most of the runs share, and a warning is printed: such numbers are
not comparable. Folders that are not run folders are named in a warning and skipped.
"""

from __future__ import annotations

import csv
import glob
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorlab.errors import ConfigError, DataError
from tumorlab.evaluation.markdown import number
from tumorlab.runs.load import RunFolder, read_run

__all__ = ["COLUMNS", "Comparison", "compare_runs", "expand_run_dirs"]

_TEST = ("acc", "precision", "recall", "f1", "f2", "auroc", "dice", "dice_volume")
COLUMNS = (
    "run",
    "model",
    "data",
    "data_check",
    "train/acc",
    "val/acc",
    *(f"test/{m}" for m in _TEST[:1]),
    "train/loss",
    "val/loss",
    *(f"test/{m}" for m in _TEST[1:]),
    "trainable_params",
    "train_time_s",
    "epochs",
    "epoch",
)
# what decides which images a run trained and was tested on: two runs that differ in any are not comparable
# (``duplicates: none`` draws a split in which copies of test images may sit in training)
_DATA_KEYS = ("root", "test_root", "csv", "classes", "binary", "seed", "split", "num_folds", "fold", "duplicates",
              "near_threshold", "test_duplicates", "drop_edge_slices", "test_group_by", "test_group")  # fmt: skip


@dataclass
class Comparison:
    """What ``compare_runs`` wrote: the rows (sorted), the files and the folders it skipped."""

    rows: list[dict[str, Any]]
    markdown: Path
    csv: Path
    png: Path | None
    skipped: list[str] = field(default_factory=list)


def expand_run_dirs(patterns: list[str]) -> list[str]:
    """Each argument as given, or the sorted folders it matches where it holds ``*``, ``?`` or ``[``."""
    out: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else []
        out += matches or [pattern]
    return out


def _short(class_path: str | None) -> str:
    return str(class_path or "?").rsplit(".", 1)[-1]


def _data_signature(config: dict[str, Any]) -> dict[str, Any]:
    data = config.get("data") or {}
    init = data.get("init_args") or {}
    return {"data": _short(data.get("class_path")), **{k: init.get(k) for k in _DATA_KEYS}}


def _best_epoch_row(run: RunFolder) -> dict[str, str]:
    """The ``metrics.csv`` row of the fit's best epoch by its monitored metric (else its last row)."""
    if run.fit_dir is None or not (run.fit_dir / "metrics.csv").is_file():
        return {}
    with open(run.fit_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    monitor = ((read_run(run.fit_dir).config.get("model") or {}).get("init_args") or {}).get("monitor") or ""
    scored = [(float(r[monitor]), k) for k, r in enumerate(rows) if r.get(monitor) not in (None, "")]
    if not scored:
        return rows[-1]
    lower = "loss" in monitor.rsplit("/", 1)[-1]
    best = min(scored, key=lambda s: (s[0] if lower else -s[0], s[1]))  # ties: the first, as ModelCheckpoint
    return rows[best[1]]


def _row(run: RunFolder) -> dict[str, Any]:
    fit = run.fit_record
    model = run.config.get("model") or {}
    net = (model.get("init_args") or {}).get("net") or {}
    signature = _data_signature(run.config)
    epoch_row = _best_epoch_row(run)
    test = run.record.get("test_metrics") or {}
    params = run.record.get("parameters") or fit.get("parameters") or {}

    def csv_value(key: str) -> float | None:
        value = epoch_row.get(key)
        return float(value) if value not in (None, "") else None

    row: dict[str, Any] = {
        "run": f"{run.path.parent.name}/{run.path.name}",
        "model": f"{_short(net.get('class_path'))} ({_short(model.get('class_path'))})",
        "data": f"{signature['data']} {signature.get('root') or signature.get('csv')}",
        "train/acc": csv_value("train/acc"),
        "val/acc": csv_value("val/acc"),
        "train/loss": csv_value("train/loss"),
        "val/loss": csv_value("val/loss"),
        "trainable_params": params.get("trainable"),
        "train_time_s": round(fit["train_time_s"], 2) if isinstance(fit.get("train_time_s"), float) else None,
        "epochs": fit.get("epochs"),
        "epoch": int(epoch_row["epoch"]) + 1 if epoch_row.get("epoch") not in (None, "") else None,
    }
    row.update({f"test/{m}": test.get(m) for m in _TEST})
    row["_signature"] = signature
    return row


def _flag_data(rows: list[dict[str, Any]]) -> list[str]:
    """Fill ``data_check``: ``same`` or the keys in which a run's data differ from most runs'; the warnings."""
    keys = [tuple(sorted((k, str(v)) for k, v in r["_signature"].items())) for r in rows]
    reference = dict(Counter(keys).most_common(1)[0][0]) if rows else {}
    warnings = []
    for row in rows:
        signature = {k: str(v) for k, v in row.pop("_signature").items()}
        differ = [f"{k} {signature[k]} (others {reference[k]})" for k in signature if signature[k] != reference[k]]
        row["data_check"] = "same" if not differ else "DIFFERENT DATA: " + "; ".join(differ)
        if differ:
            warnings.append(f"{row['run']}: other data than the other runs ({'; '.join(differ)}); not comparable")
    return warnings


def _sort(rows: list[dict[str, Any]], key: str | None) -> None:
    if not key:
        return
    if key not in COLUMNS:
        raise ConfigError(f"--sort {key!r}: not a column; choose one of {', '.join(COLUMNS)}")
    ascending = "loss" in key or key in ("train_time_s", "trainable_params")
    present = [r for r in rows if isinstance(r.get(key), (int, float))]
    missing = [r for r in rows if not isinstance(r.get(key), (int, float))]
    present.sort(key=lambda r: r[key], reverse=not ascending)
    rows[:] = present + missing  # runs without the value go last, in the given order


def _write_markdown(rows: list[dict[str, Any]], path: Path, sort: str | None) -> Path:
    lines = [
        f"# Run comparison ({len(rows)} runs{', best ' + sort + ' first' if sort else ''})",
        "",
        "train/val: the fit's metrics.csv at the best epoch (column `epoch`, by the monitored metric); "
        "test: the test command's metrics in run.json.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(number(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({c: ("" if r.get(c) is None else r[c]) for c in COLUMNS} for r in rows)
    return path


def _plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Grouped bars of the test metrics that at least one run has, one group per run."""
    import numpy as np

    from tumorlab.evaluation.figures import new_figure

    shown = [
        f"test/{m}" for m in ("acc", "f1", "auroc", "dice_volume") if any(r.get(f"test/{m}") is not None for r in rows)
    ]
    if not shown:
        return None
    fig = new_figure(figsize=(max(6.0, 1.3 * len(rows) * len(shown) / 2 + 2), 4.2), dpi=110)
    ax = fig.subplots()
    x, width = np.arange(len(rows)), 0.8 / len(shown)
    for k, metric in enumerate(shown):
        values = [r.get(metric) if r.get(metric) is not None else np.nan for r in rows]  # missing: no bar
        ax.bar(x + (k - (len(shown) - 1) / 2) * width, values, width, label=metric)
    for k, row in enumerate(rows):
        if all(row.get(m) is None for m in shown):
            ax.text(k, 0.02, "no test metrics", ha="center", fontsize=8, color="grey")
    labels = [f"{r['model']}\n{r['run']}" + ("\n(other data)" if r["data_check"] != "same" else "") for r in rows]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_xlim(-0.6, len(rows) - 0.4)  # runs without bars keep their place
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test metric")
    ax.legend(fontsize=8, ncol=len(shown))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def compare_runs(
    run_dirs: list[str | Path], sort: str | None = "test/f1", out_dir: str | Path = "comparison"
) -> Comparison:
    """Write ``comparison.md``, ``comparison.csv`` and ``comparison.png`` into ``out_dir``, one row per run.

    Args:
        run_dirs: run folders (fit or test); patterns with ``*`` are expanded. Folders that are not run
            folders are named in a warning on stderr and skipped.
        sort: the column to sort by, best first (descending; ascending for losses, time and parameters);
            runs without a value go last. ``None`` keeps the given order.
        out_dir: folder of the three files (created).
    """
    runs, skipped = [], []
    for path in expand_run_dirs([str(p) for p in run_dirs]):
        try:
            runs.append(read_run(path))
        except DataError as err:
            skipped.append(path)
            print(f"tumorlab: warning: {err}; skipped", file=sys.stderr)
    if not runs:
        raise DataError(f"no run folder among {', '.join(str(p) for p in run_dirs)}")
    rows = [_row(run) for run in runs]
    for warning in _flag_data(rows):
        print(f"tumorlab: warning: {warning}", file=sys.stderr)
    _sort(rows, sort)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return Comparison(
        rows=rows,
        markdown=_write_markdown(rows, out / "comparison.md", sort),
        csv=_write_csv(rows, out / "comparison.csv"),
        png=_plot(rows, out / "comparison.png"),
        skipped=skipped,
    )
