"""Synchronised BatchNorm under DDP that keeps timm's fused BatchNorm + activation layers intact.

Lightning's ``sync_batchnorm: true`` converts with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, which turns
timm's ``BatchNormAct2d`` (EfficientNet, Lite, ...: BatchNorm *and* its activation) into a plain
``SyncBatchNorm``: the activation is kept as a child but never called, and the network changes (on
``efficientnet_b0`` the logits move by up to 78 in eval mode with the same weights). ``TimmSyncBatchNorm`` is a
Lightning ``LayerSync`` plugin that converts with ``timm.layers.convert_sync_batchnorm`` instead (``BatchNormAct2d``
becomes ``SyncBatchNormAct``, which still applies the activation; plain BatchNorm becomes ``SyncBatchNorm``) and
reverts to the same classes. The tumorlab command uses it wherever a config asks for ``sync_batchnorm: true``.
"""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.layer_sync import LayerSync, _BatchNormXd
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm
from torch import nn

__all__ = ["TimmSyncBatchNorm"]


class TimmSyncBatchNorm(LayerSync):
    """``LayerSync`` with timm's converter: ``trainer.plugins: [tumorlab.training.sync_batchnorm.TimmSyncBatchNorm]``
    (with ``sync_batchnorm: false``, which Lightning requires alongside a plugin of its own)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Every BatchNorm of ``model`` synchronised over the process group, fused activations kept."""
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        """Back to unsynchronised layers: ``SyncBatchNormAct`` -> ``BatchNormAct2d``, ``SyncBatchNorm`` ->
        a plain BatchNorm, parameters and statistics shared."""
        converted = model
        if isinstance(model, nn.SyncBatchNorm):
            if isinstance(model, SyncBatchNormAct):
                converted = BatchNormAct2d(
                    model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
                )
                converted.act, converted.drop = model.act, model.drop
            else:
                converted = _BatchNormXd(
                    model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
                )
            if model.affine:
                with torch.no_grad():
                    converted.weight, converted.bias = model.weight, model.bias
            converted.running_mean, converted.running_var = model.running_mean, model.running_var
            converted.num_batches_tracked = model.num_batches_tracked
            converted.training = model.training
        for name, child in model.named_children():
            if name not in ("act", "drop") or converted is model:
                converted.add_module(name, self.revert(child))
        return converted
