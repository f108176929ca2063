"""Joint tumour segmentation and slice classification with the weighted loss L = θ·L_seg + (1 − θ)·L_cls."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from segmentation_models_pytorch.losses import DiceLoss

from tumorlab.errors import ConfigError
from tumorlab.models.unet import UNetWithClassifier
from tumorlab.tasks.base import TumorTask
from tumorlab.tasks.metrics import classification_metrics, segmentation_metrics

__all__ = ["MultiTaskTask"]


class MultiTaskTask(TumorTask):
    """Train a ``UNetWithClassifier`` on both heads at once.

    Args:
        net: the two-headed network.
        theta: weight of the segmentation loss in [0, 1]; 1 trains segmentation only, 0 classification only.
        optimizer: see ``TumorTask``.
        scheduler: see ``TumorTask``.
        monitor: see ``TumorTask``.

    L_seg is soft Dice + binary cross-entropy on the mask logits; L_cls is cross-entropy on the class logits.
    Logged per split (``train/``, ``val/``, ``test/``): ``loss``, ``loss_seg``, ``loss_cls``, ``dice``, ``iou``,
    ``acc``, ``f1``, ``auroc``.
    """

    def __init__(
        self,
        net: UNetWithClassifier,
        theta: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, monitor=monitor)
        if not 0.0 <= theta <= 1.0:
            raise ConfigError(f"model.theta must lie in [0, 1] (the weight of the segmentation loss), got {theta}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.theta = theta
        self.dice_loss = DiceLoss(mode="binary", from_logits=True)
        for split in ("train", "val", "test"):
            setattr(self, f"{split}_cls_metrics", classification_metrics(net.num_classes).clone(prefix=f"{split}/"))
            setattr(self, f"{split}_seg_metrics", segmentation_metrics().clone(prefix=f"{split}/"))

    def forward(self, x: torch.Tensor):
        return self.net(x)

    def losses(self, out, batch: dict) -> dict[str, torch.Tensor]:
        """The weighted joint loss and its two parts."""
        loss_seg = self.dice_loss(out.mask_logits, batch["mask"]) + F.binary_cross_entropy_with_logits(
            out.mask_logits, batch["mask"]
        )
        loss_cls = F.cross_entropy(out.class_logits, batch["label"])
        loss = self.theta * loss_seg + (1.0 - self.theta) * loss_cls
        return {"loss": loss, "loss_seg": loss_seg, "loss_cls": loss_cls}

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        out = self(batch["image"])
        losses = self.losses(out, batch)
        n = batch["image"].shape[0]
        self.log_dict(
            {f"{split}/{k}": v for k, v in losses.items()},
            prog_bar=split != "train",
            batch_size=n,
            sync_dist=True,
            on_step=split == "train",
            on_epoch=True,
        )
        probs = out.class_logits.detach().softmax(dim=1)
        cls_metrics = getattr(self, f"{split}_cls_metrics")
        cls_metrics.update(probs[:, 1] if self.num_classes == 2 else probs, batch["label"])
        seg_metrics = getattr(self, f"{split}_seg_metrics")
        seg_metrics.update((out.mask_logits.detach() > 0).long(), batch["mask"].long())
        self.log_dict(cls_metrics, batch_size=n, on_step=False, on_epoch=True)
        self.log_dict(seg_metrics, batch_size=n, on_step=False, on_epoch=True, prog_bar=split == "val")
        return losses["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        out = self(batch["image"])
        return {
            "mask_prob": out.mask_logits.sigmoid(),
            "class_prob": out.class_logits.softmax(dim=1),
            "patient": batch["patient"],
            "image_path": batch["image_path"],
        }
