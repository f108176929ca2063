"""The metrics of a ``predictions.csv``, recomputed with the tasks' own torchmetrics definitions: overall, per
class and per patient.

The overall and per-class numbers come from the collections the tasks log (``tumorlab.tasks.metrics``:
``classification_metrics``, ``per_class_metrics``, ``confusion_matrix``), fed the file's ``predicted_class``
(threshold metrics) and ``prob_<class>`` columns (AUROC), so that ``tumorlab report`` repeats the numbers
``tumorlab test`` logged. Two classes are scored as binary metrics of the positive class (the second class,
e.g. ``tumour``); more classes as macro averages and one-vs-rest AUROC.

How the names map (``logged_names``), logged ``test/<name>`` -> ``compute_metrics`` dotted key:

=============================================  =========================================================
``acc``                                        ``overall.accuracy``
``precision``, ``recall``, ``f1``, ``f2``       ``overall.precision`` ... ``overall.f2``
``auroc``                                      ``overall.auroc``
``<metric>_<class slug>`` (val/test)           ``per_class.<class>.<metric>`` (precision, recall, f1, f2)
``dice``, ``iou`` (pooled over all pixels)     ``overall.dice``, ``overall.iou`` (where there are pixel counts)
``dice_volume``                                ``overall.dice_volume`` (the mean of ``per_patient.*.dice``)
``confusion_matrix.json``                      ``confusion_matrix``
=============================================  =========================================================

``loss`` and its parts have no counterpart; ``mean_slice_dice``, ``mean_slice_dice_tumour``, per-class AUROC,
``support`` and ``predicted`` are the report's own.

A metric that the data leaves undefined (AUROC with one class present, precision of a class never predicted,
Dice with no tumour pixel predicted or true) is ``None``, and ``undefined`` maps its dotted name to the reason,
so no NaN and no silent 0 reach a table. torchmetrics itself logs such a metric as 0 (Dice: NaN);
``undefined_logged`` applies the same rule to the logged values. A macro mean is torchmetrics' own: a class
with no sample and no prediction is left out, a class whose score is undefined otherwise counts as 0, and
``notes`` says which.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tumorlab.runs.predictions import prob_classes, prob_column
from tumorlab.tasks.metrics import classification_metrics, confusion_matrix, per_class_metrics
from tumorlab.tasks.mixins import class_slug

__all__ = ["Predictions", "compute_metrics", "dotted", "logged_names", "parse_predictions", "undefined_logged"]

_CLASS_KEYS = ("precision", "recall", "f1", "f2")


@dataclass
class Predictions:
    """The labelled rows of a ``predictions.csv`` as arrays.

    Args:
        names: class names, in the order of the ``prob_<class>`` columns.
        y_true: index of the true class per row, ``(N,)``.
        y_pred: index of ``predicted_class`` per row, ``(N,)``.
        probs: class probabilities, ``(N, C)``.
        patients: patient id per row.
        dice: per-slice Dice per row (``None`` without a ``dice`` column).
        pixels: predicted and true tumour pixels per row, ``(N, 2)`` (``None`` without ``true_pixels``).
        unlabelled: rows left out because their ``true_class`` is empty or unknown.
    """

    names: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    patients: list[str]
    dice: np.ndarray | None
    unlabelled: int
    pixels: np.ndarray | None = None


def parse_predictions(rows: list[dict[str, str]]) -> Predictions:
    """Arrays of the rows that have a known true class (see ``Predictions``)."""
    names = prob_classes(rows[0])
    labelled = [r for r in rows if r.get("true_class") in names]
    has_dice = "dice" in rows[0] and all(r.get("dice") not in (None, "") for r in labelled)
    has_pixels = has_dice and all(
        r.get(k) not in (None, "") for r in labelled for k in ("tumour_pixels", "true_pixels")
    )
    return Predictions(
        names=names,
        y_true=np.array([names.index(r["true_class"]) for r in labelled], dtype=int),
        y_pred=np.array([names.index(r["predicted_class"]) for r in labelled], dtype=int),
        probs=np.array([[float(r[prob_column(n)]) for n in names] for r in labelled], dtype=float).reshape(
            -1, len(names)
        ),
        patients=[r.get("patient", "") for r in labelled],
        dice=np.array([float(r["dice"]) for r in labelled]) if has_dice else None,
        unlabelled=len(rows) - len(labelled),
        pixels=np.array([[float(r["tumour_pixels"]), float(r["true_pixels"])] for r in labelled]).reshape(-1, 2)
        if has_pixels
        else None,
    )


# The rows of a predictions.csv are already whole, and under DDP only rank zero scores them: a synchronising compute
# would wait for processes that never call it.
_LOCAL = {"sync_on_compute": False}


def _quiet(compute):
    """``compute()`` without torchmetrics' warnings about undefined cases (``undefined`` names them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute()


def _class_undefined(matrix: np.ndarray, names: list[str]) -> dict[str, str]:
    """Dotted name -> why, for the per-class metrics that a confusion matrix (rows: true class) leaves undefined.

    Precision needs a sample predicted as the class, recall a sample of it, F1/F2 either (torchmetrics:
    ``tp + fp + fn > 0``), one-vs-rest AUROC a sample of it and one of another class.
    """
    support, predicted, n = matrix.sum(1), matrix.sum(0), int(matrix.sum())
    out = {}
    for c, name in enumerate(names):
        if predicted[c] == 0:
            out[f"per_class.{name}.precision"] = f"no sample predicted as {name}"
        if support[c] == 0:
            out[f"per_class.{name}.recall"] = f"no sample of class {name}"
        if support[c] == 0 and predicted[c] == 0:
            for key in ("f1", "f2"):
                out[f"per_class.{name}.{key}"] = f"no sample of class {name} and none predicted as it"
        if support[c] in (0, n):
            present = "only positives" if support[c] else "no positives"
            out[f"per_class.{name}.auroc"] = f"{name} vs rest: {present} among the true labels, ROC AUC needs both"
    return out


def _scores(p: Predictions) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """The tasks' collections on ``p``: overall values (logged names), per-class vectors and the confusion matrix.

    Threshold metrics get ``predicted_class``, AUROC the probabilities (of the positive class for two classes).
    The task feeds its metrics the probabilities, whose argmax (two classes: p(positive) > 0.5, the same but for
    an exact tie) is the ``predicted_class`` that ``prediction_rows`` writes, so the inputs are the same.
    """
    from torchmetrics.classification import MulticlassAUROC

    c = len(p.names)
    if not len(p.y_true):  # nothing to score: every metric undefined (``_matrix_undefined`` says why)
        nan = np.full(c, np.nan)
        return (
            dict.fromkeys(classification_metrics(c).keys(), math.nan),
            dict.fromkeys(_CLASS_KEYS + ("auroc",), nan),
            np.zeros((c, c), dtype=int),
        )
    target = torch.as_tensor(p.y_true, dtype=torch.long)
    preds = torch.as_tensor(p.y_pred, dtype=torch.long)
    probs = torch.as_tensor(p.probs, dtype=torch.float32)
    overall = {}
    for name, metric in classification_metrics(c, **_LOCAL).items():
        metric.update((probs[:, 1] if c == 2 else probs) if name == "auroc" else preds, target)
        overall[name] = float(_quiet(metric.compute))
    per_class = per_class_metrics(c, **_LOCAL)
    per_class.update(preds, target)
    vectors = {k: v.double().numpy() for k, v in _quiet(per_class.compute).items()}
    auroc = MulticlassAUROC(c, average=None, **_LOCAL)
    auroc.update(probs, target)
    vectors["auroc"] = _quiet(auroc.compute).double().numpy()
    matrix = confusion_matrix(c, **_LOCAL)
    matrix.update(preds, target)
    return overall, vectors, matrix.compute().long().numpy()


def _per_class(p: Predictions, vectors: dict, matrix: np.ndarray, undefined: dict[str, str]) -> dict[str, Any]:
    out = {}
    for c, name in enumerate(p.names):
        values: dict[str, Any] = {"support": int(matrix[c].sum()), "predicted": int(matrix[:, c].sum())}
        for key in (*_CLASS_KEYS, "auroc"):
            values[key] = None if f"per_class.{name}.{key}" in undefined else float(vectors[key][c])
        out[name] = values
    return out


def _matrix_undefined(matrix: np.ndarray, names: list[str]) -> dict[str, str]:
    """``_class_undefined`` and the overall metrics it leaves undefined: for two classes those of the positive
    class, for more the macro AUROC where a class has no sample (the macro means of the others stay defined)."""
    out = _class_undefined(matrix, names)
    if len(names) == 2:
        positive = {k: out.get(f"per_class.{names[1]}.{k}") for k in (*_CLASS_KEYS, "auroc")}
        out |= {f"overall.{k}": why for k, why in positive.items() if why}
    else:
        missing = [n for c, n in enumerate(names) if matrix[c].sum() == 0]
        if missing:
            out["overall.auroc"] = f"no sample of {', '.join(missing)}: one-vs-rest AUROC is undefined for it"
    return out


def _overall(
    p: Predictions, scores: dict[str, float], matrix: np.ndarray, undefined: dict[str, str], notes: dict[str, str]
) -> dict[str, Any]:
    result: dict[str, Any] = {"samples": len(p.y_true), "accuracy": scores["acc"] if len(p.y_true) else None}
    if result["accuracy"] is None:
        undefined["overall.accuracy"] = "no labelled samples"
    for key in (*_CLASS_KEYS, "auroc"):
        result[key] = None if f"overall.{key}" in undefined else scores[key]
    if len(p.names) > 2:
        absent = [n for c, n in enumerate(p.names) if matrix[c].sum() == 0 and matrix[:, c].sum() == 0]
        for key in _CLASS_KEYS:
            zero = [n for n in p.names if f"per_class.{n}.{key}" in undefined and n not in absent]
            if absent or zero:  # torchmetrics' macro mean: weight 0 where tp + fp + fn = 0, else the score (0/0 = 0)
                said = [f"{', '.join(absent)} left out (no sample, none predicted)"] if absent else []
                said += [f"{', '.join(zero)} counted as 0 where undefined (see per_class)"] if zero else []
                notes[f"overall.{key}"] = (
                    f"macro mean over {len(p.names) - len(absent)} of {len(p.names)} classes, as torchmetrics "
                    f"logs it: {'; '.join(said)}"
                )
    if p.dice is not None and len(p.y_true):
        _dice(p, result, undefined)
    return result


def _dice(p: Predictions, result: dict[str, Any], undefined: dict[str, str]) -> None:
    """Slice means of ``dice`` and, with pixel counts, the pooled Dice and IoU and the mean volume Dice."""
    tumour = _tumour_rows(p)
    result["mean_slice_dice"] = float(p.dice.mean())
    result["mean_slice_dice_tumour"] = float(p.dice[tumour].mean()) if tumour.any() else None
    if not tumour.any():
        undefined["overall.mean_slice_dice_tumour"] = "no slice with tumour"
    if p.pixels is None:
        return
    overlap, pred, true = _pixel_sums(p, np.ones(len(p.y_true), dtype=bool))
    empty = "no tumour pixel predicted or true in the split"
    result["dice"] = 2 * overlap / (pred + true) if pred + true else None
    result["iou"] = overlap / (pred + true - overlap) if pred + true else None
    for key in ("dice", "iou"):
        if result[key] is None:
            undefined[f"overall.{key}"] = empty
    volumes = [_pooled_dice(p, np.array([x == q for x in p.patients])) for q in sorted(set(p.patients))]
    result["dice_volume"] = float(np.mean(volumes))


def _tumour_rows(p: Predictions) -> np.ndarray:
    """Rows whose true class is a tumour (every class except ``no_tumour``; LGG: the class ``tumour``)."""
    tumour = [c for c, name in enumerate(p.names) if name != "no_tumour"]
    return np.isin(p.y_true, tumour)


def _per_patient(p: Predictions, undefined: dict[str, str]) -> dict[str, Any]:
    """Per patient: slices, tumour slices, accuracy and the mean per-slice Dice (all slices, tumour slices)."""
    tumour = _tumour_rows(p)
    patients = {}
    for patient in sorted(set(p.patients)):
        idx = np.array([x == patient for x in p.patients])
        t = idx & tumour
        patients[patient] = {
            "slices": int(idx.sum()),
            "tumour_slices": int(t.sum()),
            "accuracy": float((p.y_true[idx] == p.y_pred[idx]).mean()),
            "mean_slice_dice": float(p.dice[idx].mean()),
            "dice": _pooled_dice(p, idx),
            "mean_slice_dice_tumour": float(p.dice[t].mean()) if t.any() else None,
        }
        if not t.any():
            undefined[f"per_patient.{patient}.mean_slice_dice_tumour"] = "no slice with tumour"
    return {
        "dice": "dice: the patient's volume Dice, 2·|P ∩ T| / (|P| + |T|) pooled over its slices (1 where both are "
        "empty), as VolumeDice computes test/dice_volume; the overlap of a slice is recovered from its dice, "
        "tumour_pixels and true_pixels. mean_slice_dice: the mean of the per-slice Dice.",
        "patients": patients,
    }


def _pixel_sums(p: Predictions, idx: np.ndarray) -> tuple[float, float, float]:
    """Overlap, predicted and true tumour pixels of the rows ``idx``, summed.

    Written by hand: predictions.csv keeps pixel counts, not masks, so torchmetrics' DiceScore (which needs the
    masks) cannot run on it; its micro, global Dice is ``2·Σ|P ∩ T| / (Σ|P| + Σ|T|)`` over these sums.
    """
    pred, true = p.pixels[idx, 0], p.pixels[idx, 1]
    overlap = np.rint(p.dice[idx] * (pred + true) / 2)  # per slice: dice = 2·overlap / (pred + true), an integer
    return float(overlap.sum()), float(pred.sum()), float(true.sum())


def _pooled_dice(p: Predictions, idx: np.ndarray) -> float | None:
    """The volume Dice of the rows ``idx`` (``None`` where predictions.csv lacks the pixel counts)."""
    if p.pixels is None:
        return None
    overlap, pred, true = _pixel_sums(p, idx)
    return 2 * overlap / (pred + true) if pred + true > 0 else 1.0


def compute_metrics(p: Predictions) -> dict[str, Any]:
    """``overall``, ``per_class``, ``confusion_matrix``, ``per_patient`` (where there is Dice), ``undefined``
    (dotted metric name -> why it is ``None``) and ``notes`` (dotted name -> how a macro mean was taken where
    some classes leave the metric undefined), recomputed from ``p``."""
    notes: dict[str, str] = {}
    scores, vectors, matrix = _scores(p)
    undefined = _matrix_undefined(matrix, p.names)
    per_class = _per_class(p, vectors, matrix, undefined)
    return {
        "class_names": p.names,
        "average": f"binary: the positive class {p.names[1]!r}" if len(p.names) == 2 else "macro over classes",
        "samples": len(p.y_true),
        "unlabelled_rows_left_out": p.unlabelled,
        "overall": _overall(p, scores, matrix, undefined, notes),
        "per_class": per_class,
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "class_names": p.names,
            "matrix": matrix.astype(int).tolist(),
        },
        "per_patient": _per_patient(p, undefined) if p.dice is not None else None,
        "undefined": undefined,
        "notes": notes,
    }


def logged_names(names: list[str]) -> dict[str, str]:
    """The logged metric names of a split (without ``<split>/``) -> their dotted keys in ``compute_metrics``."""
    mapping = {"acc": "overall.accuracy", **{k: f"overall.{k}" for k in (*_CLASS_KEYS, "auroc")}}
    mapping |= {k: f"overall.{k}" for k in ("dice", "iou", "dice_volume")}
    return mapping | {f"{k}_{class_slug(n)}": f"per_class.{n}.{k}" for n in names for k in _CLASS_KEYS}


def dotted(metrics: dict[str, Any], key: str) -> Any:
    """The value of ``compute_metrics`` at a dotted key (``per_class.tumour.f1``); ``KeyError`` where absent."""
    section, rest = key.split(".", 1)
    if section == "per_class":
        name, metric = rest.rsplit(".", 1)
        return metrics["per_class"][name][metric]
    return metrics[section][rest]


def undefined_logged(
    logged: dict[str, float], split: str, run_dir: str | Path, task: Any = None
) -> tuple[dict[str, float | None], dict[str, str]]:
    """The metrics a split logged, with those the data leaves undefined set to ``None``, and why (by name).

    The rule is ``compute_metrics``': for ``test``, on the ``predictions.csv`` the test pass wrote in
    ``run_dir``; otherwise on the confusion matrix of ``task`` for ``split`` (class metrics only). A value
    that is NaN is ``None`` too.
    """
    undefined, names = {}, []
    path = Path(run_dir) / "predictions.csv"
    if split == "test" and path.is_file() and path.stat().st_size:
        from tumorlab.runs.load import read_predictions

        rows = [r for r in read_predictions(path) if r.get("split") in (None, "", "test")]
        parsed = parse_predictions(rows) if rows else None
        if parsed is not None and len(parsed.y_true):
            names, undefined = parsed.names, compute_metrics(parsed)["undefined"]
    elif getattr(task, "confusion", None) is not None:
        from tumorlab.tasks.mixins import split_key

        confusion = task.confusion[split_key(split)] if split_key(split) in task.confusion else None
        if confusion is not None and confusion.update_called:
            # compute() returns the value it computed (and synchronised over DDP ranks) at the epoch's end
            names = task.class_names()
            undefined = _matrix_undefined(confusion.compute().long().cpu().numpy(), names)
    mapping = logged_names(names)
    values, reasons = {}, {}
    for key, value in logged.items():
        why = undefined.get(mapping.get(key, ""))
        if why is None and math.isnan(value):
            why = "not a number on this data"
        values[key] = None if why else value
        if why:
            reasons[key] = why
    return values, reasons
