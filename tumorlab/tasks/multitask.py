"""Joint tumour segmentation and slice classification with a weighted joint loss.

``loss_balance: fixed``: L = θ·L_seg + (1 − θ)·L_cls with θ from the config.
``loss_balance: uncertainty``: homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) with
learned log-variances s_seg, s_cls: L = exp(−s_seg)·L_seg + exp(−s_cls)·L_cls + s_seg + s_cls. This is the
form commonly used for both kinds of loss (s = log σ²; the ½ factors of the paper's regression terms are
dropped, which rescales s but not where the balance settles); θ is then ignored.
Both are pure functions in ``tumorlab.tasks.losses`` (``joint_loss``, ``uncertainty_loss``).
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.unet import UNetWithClassifier
from tumorlab.tasks.base import ClassWeights, TumorTask
from tumorlab.tasks.losses import cross_entropy_loss, dice_bce_loss, joint_loss, uncertainty_loss
from tumorlab.tasks.metrics import slice_dice
from tumorlab.tasks.mixins import ClassMetricsMixin, SegMetricsMixin, check_has_masks

__all__ = ["MultiTaskTask"]


class MultiTaskTask(ClassMetricsMixin, SegMetricsMixin, TumorTask):
    """Train a ``UNetWithClassifier`` on both heads at once.

    Args:
        net: the two-headed network.
        theta: weight of the segmentation loss in [0, 1]; 1 trains segmentation only, 0 classification only.
        loss_balance: ``fixed`` (θ) or ``uncertainty`` (learned weights, see the module docstring).
        class_weights: cross-entropy weight per class, ``"auto"`` (from the data module) or ``None``.
        optimizer: see ``TumorTask``.
        scheduler: see ``TumorTask``.
        monitor: see ``TumorTask``.
        init_from: a fit run folder or ``.ckpt`` to start from (``tasks.init_from``): a U-Net run's weights, or
            a ``TimmClassifier`` run's backbone for a ``tu-`` encoder of the same timm architecture.

    L_seg is soft Dice + binary cross-entropy on the mask logits; L_cls is cross-entropy on the class logits.
    Logged per split (``train/``, ``val/``, ``test/``): ``loss``, ``loss_seg``, ``loss_cls``, ``dice``, ``iou``,
    ``dice_volume``, ``acc``, ``precision``, ``recall``, ``f1``, ``f2``, ``auroc``; with ``uncertainty`` also
    ``train/weight_seg`` and ``train/weight_cls`` (exp(−s)).
    """

    def __init__(
        self,
        net: UNetWithClassifier,
        theta: float = 0.5,
        loss_balance: Literal["fixed", "uncertainty"] = "fixed",
        class_weights: ClassWeights = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
        init_from: str | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, monitor=monitor)
        if not 0.0 <= theta <= 1.0:
            raise ConfigError(f"model.theta must lie in [0, 1] (the weight of the segmentation loss), got {theta}")
        if loss_balance not in ("fixed", "uncertainty"):
            raise ConfigError(f"model.loss_balance must be 'fixed' or 'uncertainty', got {loss_balance!r}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.theta = theta
        self.loss_balance = loss_balance
        if loss_balance == "uncertainty":
            # s = log σ² per task, starting at 0 (both weights 1).
            self.log_var_seg = nn.Parameter(torch.zeros(()))
            self.log_var_cls = nn.Parameter(torch.zeros(()))
        self._init_class_weights(class_weights)
        self._add_seg_metrics()
        self._add_class_metrics(net.num_classes)
        self._start_from(init_from)

    def check_data(self, datamodule) -> None:
        """The data must yield masks and have as many classes as the head."""
        check_has_masks("MultiTaskTask", datamodule)
        super().check_data(datamodule)

    def forward(self, x: torch.Tensor):
        return self.net(x)

    def losses(self, out, batch: dict) -> dict[str, torch.Tensor]:
        """The joint loss and its two parts (and, with ``uncertainty``, the two task weights)."""
        loss_seg = dice_bce_loss(out.mask_logits, batch["mask"])
        loss_cls = cross_entropy_loss(out.class_logits, batch["label"], self.class_weight)
        if self.loss_balance == "uncertainty":
            loss, w_seg, w_cls = uncertainty_loss(loss_seg, loss_cls, self.log_var_seg, self.log_var_cls)
            return {"loss": loss, "loss_seg": loss_seg, "loss_cls": loss_cls, "weight_seg": w_seg, "weight_cls": w_cls}
        return {"loss": joint_loss(loss_seg, loss_cls, self.theta), "loss_seg": loss_seg, "loss_cls": loss_cls}

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        out = self(batch["image"])
        losses = self.losses(out, batch)
        n = batch["image"].shape[0]
        logged = {f"{split}/{k}": v for k, v in losses.items() if split == "train" or not k.startswith("weight")}
        self.log_dict(
            logged, prog_bar=split != "train", batch_size=n, sync_dist=True, on_step=split == "train", on_epoch=True
        )
        self._update_class_metrics(split, out.class_logits, batch["label"])
        self._update_seg_metrics(split, out.mask_logits, batch)
        return losses["loss"]

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Per slice, without the masks themselves: ``class_prob`` ``(N, C)`` of the classification head,
        ``tumour_pixels`` of the predicted mask (logit > 0) and, where the batch has ``mask``, ``dice``: that
        mask's Dice against the true mask, 1.0 where both are empty (as ``VolumeDice``); and the batch's
        ``label``, ``patient``, ``image_path``, ``split`` and ``class_names``."""
        out = self(batch["image"])
        pred = out.mask_logits.flatten(1) > 0
        result = {
            "class_prob": out.class_logits.softmax(dim=1),
            "tumour_pixels": pred.sum(1),
            "label": batch.get("label"),
            "class_names": self.class_names(),
            "patient": batch["patient"],
            "image_path": batch["image_path"],
            "split": batch.get("split"),
        }
        if "mask" in batch:
            target = batch["mask"].flatten(1) > 0.5
            result["true_pixels"], result["dice"] = target.sum(1), slice_dice(pred, target)
        return result
