"""The metrics of a ``predictions.csv``, recomputed with scikit-learn: overall, per class and per patient.

Two classes are scored as the tasks log them: precision, recall, F1 and F2 of the positive class (the second
class, e.g. ``tumour``) and AUROC of its probability; more classes as macro averages and one-vs-rest AUROC.
A metric that the data leaves undefined (AUROC with one class present, precision of a class never predicted)
is ``None``, and ``undefined`` maps its dotted name to the reason, so no NaN and no silent 0 reach a table;
a macro mean leaves such classes out and says so in ``notes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Predictions", "compute_metrics", "parse_predictions"]


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
    names = [k[len("prob_") :] for k in rows[0] if k.startswith("prob_")]
    labelled = [r for r in rows if r.get("true_class") in names]
    has_dice = "dice" in rows[0] and all(r.get("dice") not in (None, "") for r in labelled)
    has_pixels = has_dice and all(
        r.get(k) not in (None, "") for r in labelled for k in ("tumour_pixels", "true_pixels")
    )
    return Predictions(
        names=names,
        y_true=np.array([names.index(r["true_class"]) for r in labelled], dtype=int),
        y_pred=np.array([names.index(r["predicted_class"]) for r in labelled], dtype=int),
        probs=np.array([[float(r[f"prob_{n}"]) for n in names] for r in labelled], dtype=float).reshape(-1, len(names)),
        patients=[r.get("patient", "") for r in labelled],
        dice=np.array([float(r["dice"]) for r in labelled]) if has_dice else None,
        unlabelled=len(rows) - len(labelled),
        pixels=np.array([[float(r["tumour_pixels"]), float(r["true_pixels"])] for r in labelled]).reshape(-1, 2)
        if has_pixels
        else None,
    )


def _clean(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _auroc(y: np.ndarray, score: np.ndarray, what: str) -> tuple[float | None, str | None]:
    """ROC AUC of binary targets ``y`` (1 = positive), or ``None`` and why."""
    from sklearn.metrics import roc_auc_score

    if len(y) == 0:
        return None, "no labelled samples"
    if y.min() == y.max():
        present = "only positives" if y[0] == 1 else "no positives"
        return None, f"{what}: {present} among the true labels, ROC AUC needs both"
    return float(roc_auc_score(y, score)), None


def _per_class(p: Predictions, undefined: dict[str, str]) -> dict[str, dict[str, Any]]:
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(p.names)))
    prec, rec, f1, support = precision_recall_fscore_support(
        p.y_true, p.y_pred, labels=labels, average=None, zero_division=np.nan
    )
    f2 = precision_recall_fscore_support(
        p.y_true, p.y_pred, labels=labels, average=None, beta=2.0, zero_division=np.nan
    )[2]
    out = {}
    for c, name in enumerate(p.names):
        auroc, why = _auroc((p.y_true == c).astype(int), p.probs[:, c], f"{name} vs rest")
        values = {
            "support": int(support[c]),
            "predicted": int((p.y_pred == c).sum()),
            "precision": _clean(prec[c]),
            "recall": _clean(rec[c]),
            "f1": _clean(f1[c]),
            "f2": _clean(f2[c]),
            "auroc": auroc,
        }
        reasons = {
            "precision": f"no sample predicted as {name}",
            "recall": f"no sample of class {name}",
            "f1": f"no sample of class {name} and none predicted as it",
            "f2": f"no sample of class {name} and none predicted as it",
            "auroc": why,
        }
        for key, reason in reasons.items():
            if values[key] is None:
                undefined[f"per_class.{name}.{key}"] = reason or "undefined"
        out[name] = values
    return out


def _overall(p: Predictions, per_class: dict, undefined: dict[str, str], notes: dict[str, str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, fbeta_score, precision_score, recall_score, roc_auc_score

    n = len(p.y_true)
    result: dict[str, Any] = {"samples": n, "accuracy": float(accuracy_score(p.y_true, p.y_pred)) if n else None}
    if len(p.names) == 2:  # the positive class's scores, as the tasks' binary metrics
        positive = per_class[p.names[1]]
        result.update({k: positive[k] for k in ("precision", "recall", "f1", "f2", "auroc")})
        for key in ("precision", "recall", "f1", "f2", "auroc"):
            if result[key] is None:
                undefined[f"overall.{key}"] = undefined[f"per_class.{p.names[1]}.{key}"]
    else:
        labels = list(range(len(p.names)))
        kw = {"labels": labels, "average": "macro", "zero_division": np.nan}
        result["precision"] = _clean(precision_score(p.y_true, p.y_pred, **kw))
        result["recall"] = _clean(recall_score(p.y_true, p.y_pred, **kw))
        result["f1"] = _clean(fbeta_score(p.y_true, p.y_pred, beta=1.0, **kw))
        result["f2"] = _clean(fbeta_score(p.y_true, p.y_pred, beta=2.0, **kw))
        missing = [p.names[c] for c in labels if not (p.y_true == c).any()]
        if missing:
            result["auroc"] = None
            undefined["overall.auroc"] = f"no sample of {', '.join(missing)}: one-vs-rest AUROC is undefined for it"
        else:
            result["auroc"] = float(roc_auc_score(p.y_true, p.probs, multi_class="ovr", average="macro", labels=labels))
        for key in ("precision", "recall", "f1", "f2"):
            left_out = [name for name in p.names if per_class[name][key] is None]
            if result[key] is None:
                undefined[f"overall.{key}"] = f"undefined for every class (see per_class.*.{key})"
            elif left_out:  # scikit-learn's zero_division=nan averages over the classes where it is defined
                notes[f"overall.{key}"] = (
                    f"macro mean over {len(p.names) - len(left_out)} of {len(p.names)} classes; undefined for "
                    f"{', '.join(left_out)} (see per_class), which are left out"
                )
    if result["accuracy"] is None:
        undefined["overall.accuracy"] = "no labelled samples"
    if p.dice is not None:
        tumour = _tumour_rows(p)
        result["mean_slice_dice"] = float(p.dice.mean()) if n else None
        result["mean_slice_dice_tumour"] = float(p.dice[tumour].mean()) if tumour.any() else None
        if not tumour.any():
            undefined["overall.mean_slice_dice_tumour"] = "no slice with tumour"
    return result


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


def _pooled_dice(p: Predictions, idx: np.ndarray) -> float | None:
    """The volume Dice of the rows ``idx`` (``None`` where predictions.csv lacks the pixel counts)."""
    if p.pixels is None:
        return None
    pred, true = p.pixels[idx, 0], p.pixels[idx, 1]
    overlap = p.dice[idx] * (pred + true) / 2  # per slice: dice = 2·overlap / (pred + true)
    total = pred.sum() + true.sum()
    return float(2 * overlap.sum() / total) if total > 0 else 1.0


def compute_metrics(p: Predictions) -> dict[str, Any]:
    """``overall``, ``per_class``, ``confusion_matrix``, ``per_patient`` (where there is Dice), ``undefined``
    (dotted metric name -> why it is ``None``) and ``notes`` (dotted name -> how a macro mean was taken where
    some classes leave the metric undefined), recomputed from ``p``."""
    from sklearn.metrics import confusion_matrix

    undefined: dict[str, str] = {}
    notes: dict[str, str] = {}
    per_class = _per_class(p, undefined)
    labels = list(range(len(p.names)))
    matrix = confusion_matrix(p.y_true, p.y_pred, labels=labels) if len(p.y_true) else np.zeros((len(labels),) * 2)
    return {
        "class_names": p.names,
        "average": f"binary: the positive class {p.names[1]!r}" if len(p.names) == 2 else "macro over classes",
        "samples": len(p.y_true),
        "unlabelled_rows_left_out": p.unlabelled,
        "overall": _overall(p, per_class, undefined, notes),
        "per_class": per_class,
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "class_names": p.names,
            "matrix": np.asarray(matrix, dtype=int).tolist(),
        },
        "per_patient": _per_patient(p, undefined) if p.dice is not None else None,
        "undefined": undefined,
        "notes": notes,
    }
