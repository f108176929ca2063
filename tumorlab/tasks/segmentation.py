"""Tumour segmentation: soft Dice + binary cross-entropy on mask logits; Dice, IoU and per-patient Dice."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tumorlab.tasks.base import TumorTask
from tumorlab.tasks.losses import dice_bce_loss
from tumorlab.tasks.metrics import slice_dice
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
        init_from: a fit run folder or ``.ckpt`` to start from (see ``MultiTaskTask``).

    Logged per split: ``loss``, ``dice``, ``iou`` (pooled over all pixels) and ``dice_volume`` (the mean over
    patients of each patient's volume Dice; empty prediction on an empty volume = 1).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
        init_from: str | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, monitor=monitor)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        for p in getattr(net, "classification_parameters", []):
            p.requires_grad_(False)
        self._add_seg_metrics()
        self._start_from(init_from)

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
        """Per slice, without the masks themselves (a whole data set of them would not fit in memory):

        ``class_prob`` ``(N, 2)``: no tumour / tumour, the tumour probability being that of the slice's most
        confident pixel; ``tumour_pixels``: pixels of the predicted mask (logit > 0, probability > 0.5, as
        in the metrics); ``dice`` (where the batch has ``mask``): Dice of that mask against the true mask,
        2·|P ∩ T| / (|P| + |T|), and 1.0 where both are empty (the convention of ``VolumeDice``); and the
        batch's ``label``, ``patient``, ``image_path``, ``split`` and the data module's ``class_names``.
        """
        logits = self(batch["image"]).flatten(1)
        pred = logits > 0
        tumour = logits.amax(1).sigmoid()
        out = {
            "class_prob": torch.stack([1 - tumour, tumour], dim=1),
            "tumour_pixels": pred.sum(1),
            "label": batch.get("label"),
            "class_names": getattr(getattr(self._trainer, "datamodule", None), "class_names", None),
            "patient": batch["patient"],
            "image_path": batch["image_path"],
            "split": batch.get("split"),
        }
        if "mask" in batch:
            target = batch["mask"].flatten(1) > 0.5
            out["true_pixels"], out["dice"] = target.sum(1), slice_dice(pred, target)
        return out
