"""Slice / image classification: cross-entropy with class weights and label smoothing, binary or multi-class."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.tasks.base import ClassWeights, TumorTask
from tumorlab.tasks.metrics import classification_metrics, confusion_matrix, per_class_metrics

__all__ = ["ClassMetricsMixin", "ClassificationTask", "CONFUSION_FILE"]

CONFUSION_FILE = "confusion_matrix.json"
_SPLITS = ("train", "val", "test")


def _slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "class"


class ClassMetricsMixin:
    """Classification metrics of a task: per split ``<split>/acc|precision|recall|f1|f2|auroc`` (metric
    objects), per class ``<split>/<metric>_<class>`` for val and test (computed and synchronised at epoch end),
    and the test confusion matrix, written to ``confusion_matrix.json`` in the run folder."""

    def _add_class_metrics(self, num_classes: int) -> None:
        for split in _SPLITS:
            setattr(self, f"{split}_cls_metrics", classification_metrics(num_classes).clone(prefix=f"{split}/"))
        for split in ("val", "test"):
            setattr(self, f"{split}_per_class", per_class_metrics(num_classes))
            setattr(self, f"{split}_confusion", confusion_matrix(num_classes))

    def _update_class_metrics(self, split: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = logits.detach().float().softmax(dim=1)
        metrics = getattr(self, f"{split}_cls_metrics")
        metrics.update(probs[:, 1] if self.num_classes == 2 else probs, labels)
        self.log_dict(metrics, batch_size=labels.shape[0], on_step=False, on_epoch=True, prog_bar=split == "val")
        if split != "train":
            getattr(self, f"{split}_per_class").update(probs, labels)
            getattr(self, f"{split}_confusion").update(probs, labels)

    def _log_class_epoch(self, split: str) -> None:
        per_class, confusion = getattr(self, f"{split}_per_class"), getattr(self, f"{split}_confusion")
        if not confusion.update_called:
            return
        names = self.class_names()
        for metric, values in per_class.compute().items():  # compute() synchronises over DDP ranks
            for name, value in zip(names, values, strict=True):
                self.log(f"{split}/{metric}_{_slug(name)}", value, sync_dist=False)
        matrix = confusion.compute()
        # Reset outside inference mode: a later fit's validation (run under no_grad) updates these states in place.
        with torch.inference_mode(False):
            per_class.reset()
            confusion.reset()
        if split == "test":
            # trainer.log_dir broadcasts under DDP: every rank must ask, only rank zero writes.
            folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            if self.trainer.is_global_zero:
                self.write_confusion_matrix(matrix, names, folder)

    def write_confusion_matrix(self, matrix: torch.Tensor, names: list[str], folder: Path) -> Path:
        """Write ``confusion_matrix.json`` (rows: true class, columns: predicted class) into ``folder``."""
        path = folder / CONFUSION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"class_names": names, "rows": "true class", "columns": "predicted class"}
        record["matrix"] = matrix.long().tolist()
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path

    def on_validation_epoch_end(self) -> None:
        self._log_class_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_class_epoch("test")


class ClassificationTask(ClassMetricsMixin, TumorTask):
    """Train any classifier (``CNN9``, ``SmallCNN``, ``ResNet3``, ``TimmClassifier`` ...) with cross-entropy.

    Args:
        net: a network returning class logits ``(N, num_classes)`` (or an output with ``class_logits``) and
            exposing ``num_classes``.
        class_weights: cross-entropy weight per class; ``"auto"`` takes the data module's ``class_weights()``
            (inverse class frequency in the train split, mean 1); ``None`` weighs classes equally.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        optimizer: see ``TumorTask``.
        scheduler: see ``TumorTask``.
        monitor: see ``TumorTask``.

    Logged per split: ``loss``, ``acc``, ``precision``, ``recall``, ``f1``, ``f2``, ``auroc`` (binary:
    of class 1; more classes: macro), per class ``precision_<class>`` ... for val/test; training time.
    """

    def __init__(
        self,
        net: nn.Module,
        class_weights: ClassWeights = None,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, monitor=monitor)
        if not isinstance(getattr(net, "num_classes", None), int):
            raise ConfigError(f"model.net {type(net).__name__} must expose num_classes (the size of its head)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.label_smoothing = label_smoothing
        self._init_class_weights(class_weights)
        self._add_class_metrics(net.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return getattr(out, "class_logits", out)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted, label-smoothed cross-entropy."""
        return F.cross_entropy(logits, labels, weight=self.class_weight, label_smoothing=self.label_smoothing)

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        n = batch["label"].shape[0]
        self.log(f"{split}/loss", loss, batch_size=n, sync_dist=True, on_step=split == "train", on_epoch=True)
        self._update_class_metrics(split, logits, batch["label"])
        return loss

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {
            "class_prob": self(batch["image"]).softmax(dim=1),
            "patient": batch["patient"],
            "image_path": batch["image_path"],
        }
