"""ResNet3: a small residual network of three residual blocks, average pooling and a linear layer.

A 3×3 stem convolution, then three torchvision ``BasicBlock``s (two 3×3 convolutions with BatchNorm and an
identity or 1×1 projection shortcut) of ``width``, 2·``width`` and 4·``width`` channels, the last two with
stride 2; global average pooling; a linear layer. Small enough to train from scratch on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from tumorlab.errors import ConfigError
from tumorlab.models.face import TumorNet
from tumorlab.models.init import InitName, init_weights

__all__ = ["ResNet3"]


def _block(cin: int, cout: int, stride: int) -> BasicBlock:
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
    return BasicBlock(cin, cout, stride=stride, downsample=shortcut)


class ResNet3(TumorNet):
    """Three residual blocks + global average pooling + linear layer.

    Args:
        in_channels: input channels.
        num_classes: output classes (≥ 2).
        width: channels of the stem and the first block; the next blocks have 2× and 4×.
        dropout: dropout before the linear layer.
        init: weight initialisation, see ``tumorlab.models.init``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 32,
        dropout: float = 0.0,
        init: InitName = "default",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"ResNet3 num_classes must be at least 2 (a softmax head), got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            _block(width, width, 1), _block(width, 2 * width, 2), _block(2 * width, 4 * width, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes))
        init_weights(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last residual block's map ``(N, 4·width, H/8, W/8)``."""
        return self.blocks(self.stem(x))

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling ``(N, C, 1, 1)``; the head flattens it."""
        return self.pool(features)

    @property
    def cam_layer(self) -> nn.Module:
        """The last residual block."""
        return self.blocks[-1]
