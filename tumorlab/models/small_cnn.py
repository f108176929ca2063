"""SmallCNN: the 3-convolution network of the Keras 4-class study.

Conv 16 → max-pool → Conv 32 → max-pool → Conv 64 → max-pool → dropout → flatten → Dense 64 → BatchNorm →
Dense 16 → BatchNorm → Dense ``num_classes``. Convolutions are 3×3 with ``same`` padding and ReLU, so the
flattened features are 64·(S/8)² for an S×S input: about 3.2 M parameters at 224 px, almost all in the first
dense layer. The flatten ties the network to one input size, given as ``image_size``. ``forward_features`` is
the third block's pooled map; ``cam_layer`` the ReLU of the third convolution, before that pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.face import TumorNet
from tumorlab.models.init import InitName, init_weights
from tumorlab.models.preprocessing import Preprocessing

__all__ = ["SmallCNN"]


class SmallCNN(TumorNet):
    """The Keras study's small CNN (about 3.2 M parameters at 224×224).

    Args:
        in_channels: input channels.
        num_classes: output classes (4 in the study: glioma, meningioma, no tumour, pituitary).
        image_size: side of the square input in pixels; must equal the data's ``image_size`` and be divisible by 8.
        dropout: dropout before the flatten.
        init: weight initialisation, see ``tumorlab.models.init``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        image_size: int = 224,
        dropout: float = 0.25,
        init: InitName = "default",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"SmallCNN num_classes must be at least 2 (a softmax head), got {num_classes}")
        if image_size < 8 or image_size % 8:
            raise ConfigError(f"SmallCNN image_size must be a multiple of 8 (three 2×2 poolings), got {image_size}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (16, 32, 64):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        # Dropout and flatten own no parameters: outside ``features`` (which ends at the last map) and ``head``
        # they keep the state-dict keys of both.
        self.dropout = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        flat = 64 * (image_size // 8) ** 2
        self.head = nn.Sequential(
            nn.Linear(flat, 64),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(64),
            nn.Linear(64, 16),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(16),
            nn.Linear(16, num_classes),
        )
        init_weights(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The third block's map ``(N, 64, image_size/8, image_size/8)`` of images of side ``image_size``."""
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ConfigError(
                f"SmallCNN was built for {self.image_size}×{self.image_size} input but got "
                f"{x.shape[-2]}×{x.shape[-1]}; set model.net.init_args.image_size to the data's image_size"
            )
        return self.features(x)

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """Dropout, then flatten to ``(N, 64·(image_size/8)²)`` (no global pooling: the Keras design)."""
        return self.flatten(self.dropout(features))

    @property
    def cam_layer(self) -> nn.Module:
        """The ReLU after the third convolution (the map before the last 2×2 pooling)."""
        return [m for m in self.features if isinstance(m, nn.ReLU)][-1]

    @property
    def preprocessing(self) -> Preprocessing:
        """ImageNet statistics at the fixed side ``image_size``."""
        return Preprocessing.imagenet(image_size=self.image_size)
