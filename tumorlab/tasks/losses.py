"""The tasks' losses as pure functions of tensors: segmentation (soft Dice + BCE), classification
(weighted, label-smoothed cross-entropy) and the two ways of joining them (a fixed θ or learned
homoscedastic-uncertainty weights, Kendall, Gal & Cipolla, CVPR 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# smp's own soft Dice score (the one its DiceLoss calls), so dice_bce_loss follows DiceLoss exactly, even
# where a new smp version changes how the score is computed.
from segmentation_models_pytorch.losses._functional import soft_dice_score

__all__ = ["cross_entropy_loss", "dice_bce_loss", "joint_loss", "soft_dice_loss", "uncertainty_loss"]


def soft_dice_loss(mask_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − soft Dice of ``sigmoid(mask_logits)`` against ``mask``, pooled over every pixel of the batch, per channel
    (a region of a multi-region mask), then averaged over the channels.

    The same number as ``segmentation_models_pytorch.losses.DiceLoss(mode="binary", from_logits=True)``:
    Dice = 2·Σ p·t / max(Σ p + Σ t, 1e-7), and a batch without any tumour pixel gives 0 (its Dice is
    undefined; smp drops it), so such a batch is trained by the BCE term alone.

    Args:
        mask_logits: ``(N, C, H, W)`` logits (``C = 1``: one tumour mask).
        mask: ``(N, C, H, W)`` binary target (any numeric dtype).
    """
    n, c = mask.shape[:2]
    # log-sigmoid then exp, as smp: stable at extreme logits.
    probs = F.logsigmoid(mask_logits).exp().reshape(n, c, -1)
    target = mask.reshape(n, c, -1).type_as(probs)
    score = soft_dice_score(probs, target, smooth=0.0, eps=1e-7, dims=(0, 2))
    has_tumour = target.sum(dim=(0, 2)) > 0
    return ((1.0 - score) * has_tumour.to(score.dtype)).mean()


def dice_bce_loss(mask_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Segmentation loss L_seg: ``soft_dice_loss`` + mean binary cross-entropy over all pixels, equally weighted.

    Args:
        mask_logits: ``(N, 1, H, W)`` logits.
        mask: ``(N, 1, H, W)`` binary target.
    """
    bce = F.binary_cross_entropy_with_logits(mask_logits, mask.type_as(mask_logits))
    return soft_dice_loss(mask_logits, mask) + bce


def cross_entropy_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Classification loss L_cls: cross-entropy of ``(N, C)`` logits against ``(N,)`` integer labels.

    With ``weight`` the mean is PyTorch's weighted mean: Σ_i w_{y_i}·ℓ_i / Σ_i w_{y_i}; with label smoothing ε
    the target is (1 − ε)·one-hot + ε/C, and each class's term keeps its own weight.

    Args:
        logits: ``(N, C)`` class logits.
        labels: ``(N,)`` class indices.
        weight: ``(C,)`` weight per class, or ``None`` for equal weights.
        label_smoothing: ε in [0, 1).
    """
    return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)


def joint_loss(loss_seg: torch.Tensor, loss_cls: torch.Tensor, theta: float) -> torch.Tensor:
    """θ·L_seg + (1 − θ)·L_cls: θ = 1 trains segmentation only, θ = 0 classification only."""
    return theta * loss_seg + (1.0 - theta) * loss_cls


def uncertainty_loss(
    loss_seg: torch.Tensor,
    loss_cls: torch.Tensor,
    log_var_seg: torch.Tensor,
    log_var_cls: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Homoscedastic-uncertainty weighting: exp(−s_seg)·L_seg + exp(−s_cls)·L_cls + s_seg + s_cls.

    s = log σ² of each task is learned with the network; for a fixed loss L the minimum over s lies at
    s = log L, i.e. each weight exp(−s) settles at 1/L. This is the form commonly used for both kinds of
    loss (the ½ factors of the paper's regression terms are dropped, which rescales s but not where the
    balance settles); s = 0 gives the plain sum.

    Returns:
        ``(loss, weight_seg, weight_cls)``; the weights exp(−s) are detached, for logging.
    """
    w_seg, w_cls = torch.exp(-log_var_seg), torch.exp(-log_var_cls)
    loss = w_seg * loss_seg + w_cls * loss_cls + log_var_seg + log_var_cls
    return loss, w_seg.detach(), w_cls.detach()
