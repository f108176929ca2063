"""The face every tumorlab network shows, after timm's models.

``forward(x)`` is ``forward_head(forward_features(x))``: ``forward_features`` gives the unpooled feature map,
``forward_head(features, pre_logits=True)`` the pooled vector the final linear layer reads, ``reset_classifier``
swaps that layer for one of a new width. ``cam_layer`` is the module a Grad-CAM hooks and ``cam_reshape`` turns
that module's output into an ``(N, C, h, w)`` map when it is not one already (ViT tokens), as pytorch-grad-cam's
``reshape_transform`` expects. ``preprocessing`` declares the input normalisation (see ``preprocessing.py``).

``TumorNet`` implements this for networks whose head is an ``nn.Sequential`` ending in (or containing) one
``nn.Linear``; a subclass provides ``forward_features``, ``pool_features`` and ``cam_layer``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.preprocessing import Preprocessing

__all__ = ["TumorNet", "nhwc_to_nchw", "replace_linear", "run_head", "tokens_to_map"]

CamReshape = Callable[[torch.Tensor], torch.Tensor]


class TumorNet(nn.Module):
    """Base class of the classifiers: the timm-style face on top of ``self.head`` (an ``nn.Sequential``).

    Subclasses set ``num_classes``, ``in_channels`` and ``head``, and implement ``forward_features``,
    ``pool_features`` and ``cam_layer``.
    """

    num_classes: int
    in_channels: int
    head: nn.Sequential

    def train(self, mode: bool = True) -> TumorNet:
        """Set train/eval mode; BatchNorm layers whose parameters are all frozen stay in eval mode, so their
        running statistics keep their (pretrained) values."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(N, C, h, w)`` before global pooling (tokens ``(N, T, D)`` for ViTs)."""
        raise NotImplementedError

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector ``(N, D)`` (or ``(N, D, 1, 1)``) the head starts from."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of ``forward_features``' output; with ``pre_logits`` the vector
        the final linear layer reads (after the head's dropout, as in timm)."""
        return run_head(self.head, self.pool_features(features), pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of images ``(N, in_channels, H, W)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head's final linear layer by a freshly initialised one with ``num_classes`` outputs."""
        replace_linear(self.head, num_classes, type(self).__name__)
        self.num_classes = num_classes

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose forward output a Grad-CAM should hook (the last convolutional block)."""
        raise NotImplementedError

    @property
    def cam_reshape(self) -> CamReshape | None:
        """``None``: ``cam_layer`` already outputs ``(N, C, h, w)`` maps."""
        return None

    @property
    def preprocessing(self) -> Preprocessing:
        """ImageNet statistics, any input size (networks trained from scratch)."""
        return Preprocessing.imagenet()


def _linear_index(head: nn.Sequential) -> int:
    linears = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"head has no nn.Linear layer: {head}")
    return linears[-1]


def run_head(head: nn.Sequential, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    """Run ``head`` on ``x``; with ``pre_logits`` stop before its (last) linear layer."""
    stop = _linear_index(head)
    for i, layer in enumerate(head):
        if pre_logits and i == stop:
            return x
        x = layer(x)
    return x


def replace_linear(head: nn.Sequential, num_classes: int, owner: str) -> None:
    """Swap ``head``'s last linear layer for a new one with ``num_classes`` outputs (same device and dtype)."""
    if num_classes < 2:
        raise ConfigError(f"{owner} num_classes must be at least 2 (a softmax head), got {num_classes}")
    i = _linear_index(head)
    old = head[i]
    head[i] = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
    """ViT tokens ``(N, T, D)`` -> patch map ``(N, D, h, w)`` for a ``grid`` of ``(h, w)`` patches.

    The first ``num_prefix_tokens`` (class, distillation and register tokens) are dropped; blocks that carry
    patch tokens only (CaiT's self-attention blocks) are accepted as well.
    """
    h, w = grid
    n, t, d = tokens.shape
    if t == num_prefix_tokens + h * w:
        tokens = tokens[:, num_prefix_tokens:]
    elif t != h * w:
        raise ValueError(
            f"cannot reshape {t} tokens to a {h}×{w} patch grid with {num_prefix_tokens} prefix tokens; "
            "was the input the size the network was built for?"
        )
    return tokens.transpose(1, 2).reshape(n, d, h, w)


def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    """Channels-last maps ``(N, h, w, C)`` (timm's Swin stages) -> ``(N, C, h, w)``."""
    return x.permute(0, 3, 1, 2)
