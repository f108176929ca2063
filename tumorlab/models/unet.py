"""A U-Net that segments the tumour and classifies the slice, built on segmentation_models_pytorch.

smp's ``Unet`` assembles encoder -> decoder -> segmentation head and, given ``aux_params``, a
classification head (global pooling, dropout, linear) on the deepest encoder features. This wrapper
exposes those choices as typed arguments and always returns the same ``SegClsOutput``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import segmentation_models_pytorch as smp
import torch
from torch import nn

from tumorlab.errors import ConfigError

__all__ = ["SegClsOutput", "UNetWithClassifier"]


class SegClsOutput(NamedTuple):
    """``mask_logits``: (N, 1, H, W) tumour logits per pixel; ``class_logits``: (N, num_classes)."""

    mask_logits: torch.Tensor
    class_logits: torch.Tensor


class UNetWithClassifier(nn.Module):
    """U-Net with any smp encoder and a classification head on the encoder bottleneck.

    Args:
        encoder_name: an encoder smp knows (``resnet18``, ``resnet34``, ``efficientnet-b0``, ``mobilenet_v2`` ...).
        encoder_weights: ``"imagenet"`` (or another name smp lists for the encoder) to start from pretrained
            weights, which smp downloads on first use; ``None`` for random initialisation.
        in_channels: input channels (3 for the LGG slices).
        num_classes: classes of the slice-level head (2: no tumour / tumour).
        encoder_depth: encoder stages used (3-5); fewer stages are cheaper and see less context.
        decoder_channels: channels of the decoder blocks, one per encoder stage, deepest first.
        head_dropout: dropout before the classification head's linear layer.
        pooling: global pooling of the classification head.
    """

    def __init__(
        self,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        head_dropout: float = 0.2,
        pooling: Literal["avg", "max"] = "avg",
    ) -> None:
        super().__init__()
        known = smp.encoders.get_encoder_names()
        if encoder_name not in known:
            examples = ", ".join(n for n in ("resnet18", "resnet34", "efficientnet-b0", "mobilenet_v2") if n in known)
            raise ConfigError(
                f"unknown smp encoder {encoder_name!r}; use one of smp.encoders.get_encoder_names(), e.g. {examples}"
            )
        if len(decoder_channels) != encoder_depth:
            raise ConfigError(
                f"decoder_channels has {len(decoder_channels)} entries but encoder_depth is {encoder_depth}; "
                "give one decoder width per encoder stage"
            )
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2 (a softmax head), got {num_classes}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.net = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=1,
            aux_params={"classes": num_classes, "dropout": head_dropout, "pooling": pooling},
        )
        _drop_unused_stages(self.net.encoder, encoder_depth)

    @property
    def segmentation_parameters(self) -> list[nn.Parameter]:
        """Parameters of the decoder and the segmentation head (not of the shared encoder)."""
        return [*self.net.decoder.parameters(), *self.net.segmentation_head.parameters()]

    @property
    def classification_parameters(self) -> list[nn.Parameter]:
        """Parameters of the classification head."""
        return list(self.net.classification_head.parameters())

    def forward(self, x: torch.Tensor) -> SegClsOutput:
        mask_logits, class_logits = self.net(x)
        return SegClsOutput(mask_logits, class_logits)


def _drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Remove the stages a shallow ResNet-style encoder never runs.

    smp keeps ``layer3``/``layer4`` of a ResNet encoder even when ``encoder_depth`` < 5 stops before them:
    they would hold parameters that never get a gradient (dead weight in the optimiser, and an error under
    DDP without ``find_unused_parameters``). Stage ``layer<k>`` runs only when ``depth > k``.
    """
    for k in range(max(depth, 1), 5):
        if isinstance(getattr(encoder, f"layer{k}", None), nn.Module):
            delattr(encoder, f"layer{k}")
