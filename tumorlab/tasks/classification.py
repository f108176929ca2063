"""Slice / image classification: cross-entropy with class weights and label smoothing, binary or multi-class."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.tasks.base import ClassWeights, TumorTask
from tumorlab.tasks.losses import cross_entropy_loss
from tumorlab.tasks.mixins import CONFUSION_FILE, ClassMetricsMixin

__all__ = ["CONFUSION_FILE", "ClassificationTask"]


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
        init_from: a fit run folder or ``.ckpt`` to start from (``tasks.init_from``: the matching backbone
            weights are loaded, a head of another width is new).
        layer_decay: layer-wise learning-rate decay for a ``TimmClassifier`` (ViTs, ConvNeXts): timm's groups
            (``group_matcher``) get the learning rate times ``layer_decay ** (depth from the top)``, the head the
            full rate (timm's ``param_groups_layer_decay``, what ``timm.optim.create_optimizer_v2`` uses);
            e.g. 0.75. ``None``: one learning rate.

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
        init_from: str | None = None,
        layer_decay: float | None = None,
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
        if layer_decay is not None and (not 0 < layer_decay <= 1 or not hasattr(net, "backbone")):
            raise ConfigError(
                f"model.layer_decay must lie in (0, 1] and needs a TimmClassifier; got {layer_decay} for "
                f"{type(net).__name__}"
            )
        self.layer_decay = layer_decay
        self._start_from(init_from)

    def parameter_groups(self) -> list:
        """The trainable parameters; with ``layer_decay`` timm's layer-decay groups of the backbone (each with an
        ``lr_scale``) plus the head at the full rate."""
        if self.layer_decay is None:
            return super().parameter_groups()
        from timm.optim import param_groups_layer_decay

        decay = float(getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0) or 0.0)
        groups = param_groups_layer_decay(self.net.backbone, weight_decay=decay, layer_decay=self.layer_decay)
        backbone = {id(p) for p in self.net.backbone.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone]
        return [*(g for g in groups if g["params"]), {"params": rest, "lr_scale": 1.0}]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return getattr(out, "class_logits", out)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted, label-smoothed cross-entropy (``losses.cross_entropy_loss``)."""
        return cross_entropy_loss(logits, labels, self.class_weight, self.label_smoothing)

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        n = batch["label"].shape[0]
        self.log(f"{split}/loss", loss, batch_size=n, sync_dist=True, on_step=split == "train", on_epoch=True)
        self._update_class_metrics(split, logits, batch["label"])
        return loss

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """What ``reports.prediction_rows`` turns into rows: ``class_prob`` ``(N, C)``, the batch's ``label``,
        ``patient``, ``image_path`` and ``split`` (``None`` where the batch lacks them) and ``class_names``."""
        return {
            "class_prob": self(batch["image"]).softmax(dim=1),
            "label": batch.get("label"),
            "class_names": self.class_names(),
            "patient": batch["patient"],
            "image_path": batch["image_path"],
            "split": batch.get("split"),
        }
