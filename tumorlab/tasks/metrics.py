"""torchmetrics collections shared by the tasks. Logged as metric objects (or computed with their own
state synchronisation at epoch end), so they reduce correctly under DDP.

``VolumeDice`` (per-patient Dice) is written here because torchmetrics has no grouped Dice: it keeps
per-slice sums in cat-reduced list states and groups them by patient in ``compute()``.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryFBetaScore,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassFBetaScore,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.segmentation import DiceScore
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "VolumeDice",
    "classification_metrics",
    "confusion_matrix",
    "patient_key",
    "per_class_metrics",
    "monitor_mode",
    "segmentation_metrics",
    "slice_dice",
]


def monitor_mode(metric: str) -> str:
    """``min`` for losses (a name containing ``loss``), ``max`` for every other metric tumorlab logs."""
    return "min" if "loss" in metric.rsplit("/", 1)[-1] else "max"


def classification_metrics(num_classes: int, **kw: Any) -> MetricCollection:
    """Accuracy, precision, recall, F1, F2 (F-beta, β = 2) and AUROC.

    Two classes use binary metrics of the positive class (class 1, e.g. tumour) on its probability; more
    classes use macro-averaged multiclass metrics (accuracy stays micro, i.e. the share correct).

    Inputs: probabilities ``(N,)`` for two classes or ``(N, C)`` for more, and integer targets ``(N,)``.
    ``kw`` goes to every metric (``sync_on_compute=False``: scored in one process, e.g. a ``predictions.csv``).
    """
    if num_classes == 2:
        return MetricCollection(
            {
                "acc": BinaryAccuracy(**kw),
                "precision": BinaryPrecision(**kw),
                "recall": BinaryRecall(**kw),
                "f1": BinaryF1Score(**kw),
                "f2": BinaryFBetaScore(beta=2.0, **kw),
                "auroc": BinaryAUROC(**kw),
            }
        )
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **kw),
            "precision": MulticlassPrecision(num_classes, average="macro", **kw),
            "recall": MulticlassRecall(num_classes, average="macro", **kw),
            "f1": MulticlassF1Score(num_classes, average="macro", **kw),
            "f2": MulticlassFBetaScore(beta=2.0, num_classes=num_classes, average="macro", **kw),
            "auroc": MulticlassAUROC(num_classes, average="macro", **kw),
        }
    )


def per_class_metrics(num_classes: int, **kw: Any) -> MetricCollection:
    """Precision, recall, F1 and F2 of every class (vectors of length C). Inputs: ``(N, C)`` probabilities."""
    return MetricCollection(
        {
            "precision": MulticlassPrecision(num_classes, average=None, **kw),
            "recall": MulticlassRecall(num_classes, average=None, **kw),
            "f1": MulticlassF1Score(num_classes, average=None, **kw),
            "f2": MulticlassFBetaScore(beta=2.0, num_classes=num_classes, average=None, **kw),
        }
    )


def confusion_matrix(num_classes: int, **kw: Any) -> MulticlassConfusionMatrix:
    """Counts: rows are the true class, columns the predicted class. Inputs: ``(N, C)`` probabilities."""
    return MulticlassConfusionMatrix(num_classes, **kw)


def segmentation_metrics() -> MetricCollection:
    """Dice and IoU of the tumour, pooled over all pixels of the split (global, not a mean over slices).

    Inputs: binary predictions and targets ``(N, 1, H, W)`` as integers.
    """
    with warnings.catch_warnings():
        # `average` is given; torchmetrics warns about its future default regardless (here only, not globally)
        warnings.filterwarnings("ignore", message="DiceScore metric currently defaults")
        dice = DiceScore(num_classes=1, average="micro", aggregation_level="global", input_format="one-hot")
    return MetricCollection(
        {
            "dice": dice,
            # No per-batch input validation: it runs torch.unique over every pixel of the batch, milliseconds per
            # step on the CPU (docs/benchmarks.md, framework overhead). The inputs are `logits > 0` and masks that
            # the data layer has already read as 0/1 (tumorlab.data.io.read_mask refuses any other mask).
            "iou": BinaryJaccardIndex(validate_args=False),
        }
    )


def slice_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of each slice, ``2·|P ∩ T| / (|P| + |T|)``, for boolean ``(N, pixels)`` masks; 1.0 where both are
    empty (nothing to find, nothing found: the convention of ``VolumeDice``).

    Written by hand because torchmetrics' per-sample ``dice_score`` gives NaN for an empty pair (and warns).
    """
    overlap, total = (pred & target).sum(1), pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total, dtype=torch.float32))


def patient_key(patient: str) -> int:
    """A stable int64 key of a patient id (CRC-32; the same on every rank and in every run)."""
    return zlib.crc32(str(patient).encode("utf-8"))


class VolumeDice(Metric):
    """Mean over patients of the Dice of each patient's whole volume (all its slices in the split).

    Dice = 2·|P ∩ T| / (|P| + |T|) over every pixel of the patient's slices. A patient with an empty
    prediction and an empty ground truth scores 1 (nothing to find, nothing found); an empty prediction
    on a non-empty volume scores 0. Slices of one patient may be spread over batches and DDP ranks:
    the per-slice sums are gathered first and grouped in ``compute()``. Patient ids are hashed with CRC-32,
    so two ids collide with probability about n²/2³³ (negligible for data sets of hundreds of patients).

    ``update(preds, target, patients)``: binary ``(N, 1, H, W)`` predictions and masks, and ``N`` patient ids.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("patient", "intersection", "pred_sum", "target_sum"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, patients: Sequence[str]) -> None:
        if len(patients) != preds.shape[0]:
            raise ValueError(f"VolumeDice got {preds.shape[0]} slices but {len(patients)} patient ids")
        p, t = preds.flatten(1).long(), target.flatten(1).long()
        self.patient.append(torch.tensor([patient_key(x) for x in patients], dtype=torch.int64, device=p.device))
        self.intersection.append((p * t).sum(1))
        self.pred_sum.append(p.sum(1))
        self.target_sum.append(t.sum(1))

    def per_patient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(patient keys, Dice per patient)`` over everything seen (after DDP synchronisation in compute)."""
        keys = dim_zero_cat(self.patient)
        unique, inverse = torch.unique(keys, return_inverse=True)

        def grouped(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
            values = dim_zero_cat(state).double()
            return torch.zeros(len(unique), dtype=torch.float64, device=values.device).index_add_(0, inverse, values)

        inter, denom = grouped(self.intersection), grouped(self.pred_sum) + grouped(self.target_sum)
        dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
        return unique, dice

    def compute(self) -> torch.Tensor:
        if not (self.patient if isinstance(self.patient, list) else [self.patient]):
            return torch.tensor(float("nan"), device=self.device)
        return self.per_patient()[1].mean().float()
