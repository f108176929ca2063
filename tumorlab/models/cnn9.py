"""CNN9: the 9-layer convolutional network of the LGG tumour-detection study.

Eight 3×3 convolutions in four blocks of two (BatchNorm + ReLU after each), 2×2 max-pooling and dropout after
each block, global average pooling and one linear layer: nine weight layers in all. Widths double per block
(``width``, 2·``width``, 4·``width``, 8·``width``). Global pooling makes it work at any input size ≥ 16 px.
``forward_features`` is ``features`` (ending with the last block's pooling and dropout); ``cam_layer`` is the
last block's ReLU, whose map has twice that resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.face import TumorNet
from tumorlab.models.init import InitName, init_weights

__all__ = ["CNN9"]


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN9(TumorNet):
    """The 9-layer CNN (8 convolutions + 1 linear layer) for tumour / no-tumour and multi-class slices.

    Args:
        in_channels: input channels (3 for LGG slices and the 4-class JPEGs).
        num_classes: output classes (≥ 2; softmax logits).
        width: channels of the first block; the others have 2×, 4×, 8×.
        dropout: dropout probability after each block and before the linear layer.
        init: weight initialisation, see ``tumorlab.models.init`` (the LGG study used ``normal``, std 0.1).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 32,
        dropout: float = 0.25,
        init: InitName = "default",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"CNN9 num_classes must be at least 2 (a softmax head), got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"CNN9 dropout must lie in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        cin = in_channels
        for k in range(4):
            cout = width * 2**k
            layers += _conv_bn_relu(cin, cout) + _conv_bn_relu(cout, cout)
            layers += [nn.MaxPool2d(2), nn.Dropout2d(dropout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))
        init_weights(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's map ``(N, 8·width, H/16, W/16)`` (after its pooling and dropout)."""
        return self.features(x)

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling ``(N, C, 1, 1)``; the head flattens it."""
        return self.pool(features)

    @property
    def cam_layer(self) -> nn.Module:
        """The ReLU after the last convolution: the last block's map before its 2×2 pooling."""
        return [m for m in self.features if isinstance(m, nn.ReLU)][-1]
