"""What a run prints and writes as tables: the metrics table of a split and ``predictions.csv``.

The figures and the run report live in ``tumorlab.evaluation``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "PROB_PREFIX",
    "format_metrics",
    "gather_rows",
    "prediction_rows",
    "prob_classes",
    "prob_column",
    "write_predictions",
]

PROB_PREFIX = "prob_"

_ORDER = ("dice", "iou", "acc", "f1", "auroc", "loss", "loss_seg", "loss_cls")


_PER_CLASS = ("precision", "recall", "f1", "f2")


def format_metrics(
    metrics: dict[str, float | None], title: str, run_dir: Path, class_slugs: list[str] | None = None
) -> str:
    """The metrics of a split as one table: overall values (4 significant digits, the main ones first), then
    one row per class for the per-class values logged as ``<metric>_<class>``. A value that the data leaves
    undefined (``None``, or NaN) is printed ``n/a``, as in ``report.md``."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{value:.4g}"

    per_class: dict[str, dict[str, float | None]] = {}
    for slug in class_slugs or []:
        values = {m: metrics[f"{m}_{slug}"] for m in _PER_CLASS if f"{m}_{slug}" in metrics}
        if values:
            per_class[slug] = values
    taken = {f"{m}_{slug}" for slug, values in per_class.items() for m in values}
    overall = [k for k in _ORDER if k in metrics] + sorted(k for k in metrics if k not in _ORDER and k not in taken)
    width = max([len(k) for k in overall] + [len(c) for c in per_class] + [6])
    lines = [f"{title}:", *(f"  {k:<{width}}  {cell(metrics[k])}" for k in overall)]
    if per_class:
        lines.append(f"  {'class':<{width}}" + "".join(f"  {m:>9}" for m in _PER_CLASS))
        for slug, values in per_class.items():
            cells = "".join(f"  {cell(values[m]):>9}" if m in values else f"  {'':>9}" for m in _PER_CLASS)
            lines.append(f"  {slug:<{width}}{cells}")
    lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


def prob_column(class_name: object) -> str:
    """The ``predictions.csv`` column of a class's probability: ``prob_`` and the class name exactly as
    ``true_class`` and ``predicted_class`` write it (``prob_glioma``, ``prob_No Tumour``), so a reader finds the
    class of a column without a second naming rule. The writers (``prediction_rows``: ``tumorlab predict``, ``test``,
    ``ensemble``; ``tumorlab predict-images``) and ``runs.load.read_predictions`` (report, cv, ensemble) use this
    and ``prob_classes``."""
    return f"{PROB_PREFIX}{class_name}"


def prob_classes(columns) -> list[str]:
    """The class names of the ``prob_<class>`` columns among ``columns`` (a header or a row), in their order."""
    return [c[len(PROB_PREFIX) :] for c in columns if c.startswith(PROB_PREFIX)]


def prediction_rows(batches: list[dict], class_names: list[str] | None = None) -> list[dict]:
    """One row per slice of the ``predict_step`` outputs ``batches``, its columns in this order:

    ``file`` (the image path), ``patient``, ``split`` (``train``, ``val`` or ``test``), ``true_class`` (the
    class name of the label; empty where the label is unknown, i.e. missing or negative), ``predicted_class``
    (the name of the most probable class), ``prob_<class name>`` per class, and for segmentation outputs
    ``tumour_pixels`` (of the predicted mask), ``true_pixels`` (of the true mask) and ``dice`` (of the slice's
    predicted mask against its true mask; 1.0 where both are empty, as ``tasks.metrics.VolumeDice``; the last two
    absent without true masks).

    Class names come from ``class_names``, else from the outputs' own ``class_names`` (the data module's,
    which the tasks pass on), else are the class indices; names whose number differs from the number of
    probabilities are not used. ``predicted_class`` is the first of the most probable classes.
    """

    def column(batch: dict, key: str, n: int, default) -> list:
        values = batch.get(key)
        values = [default] * n if values is None else values
        return values.tolist() if hasattr(values, "tolist") else list(values)  # one device copy per batch

    rows = []
    for batch in batches:
        probs = batch["class_prob"].detach().float().cpu()
        n, width = probs.shape
        names = [str(x) for x in (class_names or batch.get("class_names") or [])]
        if len(names) != width:
            names = [str(c) for c in range(width)]
        labels, splits = column(batch, "label", n, -1), column(batch, "split", n, "")
        extra = {key: column(batch, key, n, None) for key in ("tumour_pixels", "true_pixels", "dice") if key in batch}
        for i, (p, top) in enumerate(zip(probs.tolist(), probs.argmax(1).tolist(), strict=True)):
            row = {
                "file": batch["image_path"][i],
                "patient": batch["patient"][i],
                "split": splits[i],
                "true_class": names[labels[i]] if 0 <= labels[i] < width else "",
                "predicted_class": names[top],
                **{prob_column(name): value for name, value in zip(names, p, strict=True)},
            }
            rows.append(row | {key: values[i] for key, values in extra.items()})
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
    """Write the rows of ``prediction_rows`` to ``run_dir/predictions.csv`` (one row per slice).

    The columns keep the order of ``prediction_rows`` (those of the first row first, any others after);
    a row without a column leaves it empty. No rows: an empty file.
    """
    import csv

    path = Path(run_dir) / "predictions.csv"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    return path
