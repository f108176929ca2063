"""Tumour segmentation: soft Dice + binary cross-entropy on mask logits; Dice, IoU and per-patient Dice."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tumorlab.tasks.base import TumorTask
from tumorlab.tasks.losses import dice_bce_loss
from tumorlab.tasks.mixins import SegMetricsMixin, check_has_masks

__all__ = ["SegmentationTask"]


class SegmentationTask(SegMetricsMixin, TumorTask):
    """Train a segmentation network on tumour masks with soft Dice + BCE.

    Args:
        net: a network returning mask logits ``(N, 1, H, W)``, or an output with ``mask_logits`` such as
            ``UNetWithClassifier`` (its classification head is frozen here: nothing trains it).
        optimizer: see ``TumorTask``.
        scheduler: see ``TumorTask``.
        monitor: see ``TumorTask``.

    Logged per split: ``loss``, ``dice``, ``iou`` (pooled over all pixels) and ``dice_volume`` (the mean over
    patients of each patient's volume Dice; empty prediction on an empty volume = 1).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, monitor=monitor)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        for p in getattr(net, "classification_parameters", []):
            p.requires_grad_(False)
        self._add_seg_metrics()

    @property
    def num_classes(self) -> int | None:
        return getattr(self.net, "num_classes", None)

    def check_data(self, datamodule) -> None:
        """Raise ``ConfigError`` if the data module yields no masks or disagrees on the number of classes."""
        check_has_masks("SegmentationTask", datamodule)
        if self.num_classes is not None:
            super().check_data(datamodule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return getattr(out, "mask_logits", out)

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        mask_logits = self(batch["image"])
        loss = dice_bce_loss(mask_logits, batch["mask"])
        n = mask_logits.shape[0]
        self.log(f"{split}/loss", loss, batch_size=n, sync_dist=True, on_step=split == "train", on_epoch=True)
        self._update_seg_metrics(split, mask_logits, batch)
        return loss

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        mask_prob = self(batch["image"]).sigmoid()
        tumour = mask_prob.flatten(1).amax(1)  # a slice's tumour probability: its most confident pixel
        return {
            "mask_prob": mask_prob,
            "class_prob": torch.stack([1 - tumour, tumour], dim=1),
            "patient": batch["patient"],
            "image_path": batch["image_path"],
        }
