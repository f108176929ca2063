"""Gradual unfreezing: train the new head first, then the pretrained backbone at a lower learning rate.

Built on Lightning's ``BaseFinetuning`` (which freezes before the optimiser is made, and saves and restores the
parameter groups it added, so a resumed fit continues with them). Configured in YAML::

    trainer:
      callbacks:
        - class_path: tumorlab.training.finetuning.GradualUnfreezing
          init_args: {head_epochs: 2, mode: groups, groups_per_epoch: 2, lr_factor: 0.1}

The backbone is ``net.backbone`` of a ``TimmClassifier`` or the encoder of a ``UNetWithClassifier``; its
groups are timm's ``group_matcher`` groups (``tumorlab.models.freezing``), unfrozen from the last towards the
stem. Frozen BatchNorm layers stay in eval mode (``TimmClassifier.train``), so their statistics keep the
pretrained values until their group is unfrozen.
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.freezing import group_label, timm_groups

__all__ = ["GradualUnfreezing", "backbone_of"]


def backbone_of(net: nn.Module) -> nn.Module:
    """The pretrained part of ``net``: a ``TimmClassifier``'s ``backbone``, a ``UNetWithClassifier``'s encoder
    (its timm model for ``tu-`` encoders)."""
    backbone = getattr(net, "backbone", None)
    if backbone is None and hasattr(net, "net") and hasattr(net.net, "encoder"):
        backbone = getattr(net.net.encoder, "model", net.net.encoder)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"GradualUnfreezing needs a network with a pretrained backbone (TimmClassifier, UNetWithClassifier); "
            f"got {type(net).__name__}"
        )
    return backbone


class GradualUnfreezing(BaseFinetuning):
    """Train the head (and whatever else is not the backbone) for ``head_epochs``, then unfreeze the backbone.

    Args:
        head_epochs: epochs with the whole backbone frozen (at least 1).
        mode: ``all`` unfreezes the whole backbone at epoch ``head_epochs``; ``groups`` unfreezes
            ``groups_per_epoch`` of timm's groups per epoch from then on, the last group first.
        groups_per_epoch: groups unfrozen per epoch in ``groups`` mode.
        lr_factor: the unfrozen parameters' learning rate is the optimiser's first group's initial learning
            rate times this (0.1: ten times lower than the head's).
    """

    def __init__(
        self,
        head_epochs: int = 1,
        mode: Literal["all", "groups"] = "all",
        groups_per_epoch: int = 1,
        lr_factor: float = 0.1,
    ) -> None:
        super().__init__()
        if head_epochs < 1 or groups_per_epoch < 1 or not 0 < lr_factor <= 1:
            raise ConfigError(
                "GradualUnfreezing needs head_epochs >= 1, groups_per_epoch >= 1 and 0 < lr_factor <= 1; got "
                f"{head_epochs}, {groups_per_epoch}, {lr_factor}"
            )
        if mode not in ("all", "groups"):
            raise ConfigError(f"GradualUnfreezing mode must be 'all' or 'groups', got {mode!r}")
        self.head_epochs = head_epochs
        self.mode = mode
        self.groups_per_epoch = groups_per_epoch
        self.lr_factor = lr_factor

    def freeze_before_training(self, pl_module) -> None:
        """Freeze the whole backbone (BatchNorm included); the rest trains as configured."""
        self.freeze(backbone_of(pl_module.net), train_bn=False)
        pl_module.net.train(pl_module.net.training)  # a TumorNet puts its frozen BatchNorm layers in eval mode

    def groups_open(self, epoch: int, total: int) -> int:
        """How many of the backbone's ``total`` groups (counted from the last) train in ``epoch``."""
        if epoch < self.head_epochs:
            return 0
        if self.mode == "all":
            return total
        return min(total, (epoch - self.head_epochs + 1) * self.groups_per_epoch)

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        """Make the groups due by ``epoch`` trainable and add those not yet in ``optimizer`` (idempotent, so a
        resumed fit reaches the same state)."""
        backbone = backbone_of(pl_module.net)
        groups = timm_groups(backbone)
        n = self.groups_open(epoch, len(groups))
        if n == 0:
            return
        params = dict(backbone.named_parameters())
        due = [params[name] for group in groups[len(groups) - n :] for name in group]
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for p in due:
            p.requires_grad_(True)
        pl_module.net.train(pl_module.training)  # the unfrozen BatchNorm layers train again
        new = [p for p in due if id(p) not in in_optimizer]
        if not new:
            return
        lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"]) * self.lr_factor
        optimizer.add_param_group({"params": new, "lr": lr, "initial_lr": lr})
        _extend_schedulers(pl_module.trainer, optimizer, lr)
        first = group_label(groups[len(groups) - n])
        rank_zero_info(
            f"GradualUnfreezing: epoch {epoch}: {n} of {len(groups)} backbone groups train (from {first}); "
            f"{sum(p.numel() for p in new):,} parameters added at lr {lr:g}"
        )


def _extend_schedulers(trainer, optimizer, lr: float) -> None:
    """Give the schedulers of ``optimizer`` an entry for its new parameter group (they keep one per group)."""
    for config in getattr(trainer, "lr_scheduler_configs", []):
        scheduler = config.scheduler
        if getattr(scheduler, "optimizer", None) is not optimizer:
            continue
        if isinstance(getattr(scheduler, "base_lrs", None), list):
            scheduler.base_lrs.append(lr)
        if isinstance(getattr(scheduler, "min_lrs", None), list):
            scheduler.min_lrs.append(scheduler.min_lrs[-1] if scheduler.min_lrs else 0.0)
        if isinstance(getattr(scheduler, "_last_lr", None), list):
            scheduler._last_lr.append(lr)
