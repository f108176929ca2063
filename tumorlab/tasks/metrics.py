"""torchmetrics collections shared by the tasks. Logged as metric objects, so they reduce correctly under DDP."""

from __future__ import annotations

import warnings

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)
from torchmetrics.segmentation import DiceScore

__all__ = ["classification_metrics", "segmentation_metrics"]

# We always pass `average` explicitly; torchmetrics warns about its future default regardless.
warnings.filterwarnings("ignore", message="DiceScore metric currently defaults")


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, F1 and AUROC. Two classes use binary metrics on the positive class's probability;
    more classes use macro-averaged multiclass metrics (accuracy stays micro, i.e. the share correct).

    Inputs: probabilities ``(N,)`` for two classes or ``(N, C)`` for more, and integer targets ``(N,)``.
    """
    if num_classes == 2:
        return MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()})
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
        }
    )


def segmentation_metrics() -> MetricCollection:
    """Dice and IoU of the tumour, pooled over all pixels of the split (global, not a mean over slices).

    Inputs: binary predictions and targets ``(N, 1, H, W)`` as integers.
    """
    return MetricCollection(
        {
            "dice": DiceScore(num_classes=1, average="micro", aggregation_level="global", input_format="one-hot"),
            "iou": BinaryJaccardIndex(),
        }
    )
