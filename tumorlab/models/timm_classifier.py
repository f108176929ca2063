"""TimmClassifier: any timm model as a feature extractor with a new head, for transfer learning.

The backbone is ``timm.create_model(name, pretrained=..., num_classes=0)``: timm's own weights and its own
global pooling (average pooling for CNNs, the class token for ViTs), no classifier. The head is dropout +
linear, as in the 4-class EfficientNet and ReMIND studies.

Freezing counts *layers* as parameterised leaf modules (a module that owns parameters directly: a
convolution, a linear layer, a BatchNorm, a ViT block's LayerNorm ...) in registration order, which for timm
models is the order of the forward pass; the head's linear layer is the last one. ``trainable_layers: 10``
trains the last 10 of them (the head included) and freezes the rest, like Keras' ``layers[-10:]``.
Frozen BatchNorm layers stay in eval mode during training, so their running statistics keep the
pretrained values.

Input sizes: ``inception_v3`` needs at least 75 px; ViTs expect the size they were built for (224 for
``vit_*_224``) unless ``img_size`` is given, which timm passes to the patch embedding.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from tumorlab.errors import ConfigError

__all__ = ["TimmClassifier", "parameterised_layers"]

# Smallest input side each family accepts (its stem downsamples that much before the first pooling).
_MIN_SIZE = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75}


def parameterised_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module that owns parameters directly, in registration order."""
    return [(n, m) for n, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


class TimmClassifier(nn.Module):
    """A timm backbone (any model name timm knows) + dropout + linear head, with optional freezing.

    Args:
        name: a timm model name, e.g. ``vgg19``, ``resnet18``, ``resnet50``, ``densenet121``, ``xception41``,
            ``inception_v3``, ``efficientnet_b0``, ``vit_base_patch16_224``; ``timm.list_models("vit*")`` lists them.
        pretrained: start from timm's pretrained weights (downloaded from the Hugging Face Hub on first use).
        weights_file: a local weights file (``.pth``/``.safetensors``) to load instead of downloading; it implies
            ``pretrained``. Passed to timm as ``pretrained_cfg_overlay={"file": ...}``, so timm adapts it as usual.
        num_classes: classes of the new head.
        in_channels: input channels (timm adapts the first convolution of pretrained weights).
        dropout: dropout before the head's linear layer (0.5 in the 4-class EfficientNet study).
        trainable_layers: train only the last N parameterised layers, head included (ReMIND: 10); ``None``
            trains everything unless ``freeze_backbone``.
        freeze_backbone: train the head only (the ResNet18 study).
        img_size: input size for models that fix it at construction (ViTs); ``None`` keeps timm's default.
    """

    def __init__(
        self,
        name: str = "resnet18",
        pretrained: bool = False,
        weights_file: str | None = None,
        num_classes: int = 2,
        in_channels: int = 3,
        dropout: float = 0.0,
        trainable_layers: int | None = None,
        freeze_backbone: bool = False,
        img_size: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"TimmClassifier num_classes must be at least 2 (a softmax head), got {num_classes}")
        if trainable_layers is not None and freeze_backbone:
            raise ConfigError("set either trainable_layers or freeze_backbone, not both")
        self.name = name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.backbone = _create_backbone(name, pretrained, weights_file, in_channels, img_size)
        # timm's pooled output width: num_features, or head_hidden_size where a pre-logits block widens it (VGG: 4096).
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        elif trainable_layers is not None:
            self.freeze_all_but(trainable_layers)

    def freeze_all_but(self, n: int) -> None:
        """Freeze every parameterised layer except the last ``n`` (the head counts as one)."""
        layers = parameterised_layers(self)
        if not 1 <= n <= len(layers):
            raise ConfigError(
                f"trainable_layers is {n} but {self.name} with its head has {len(layers)} parameterised layers; "
                f"choose 1..{len(layers)} (or freeze_backbone: true for the head only)"
            )
        for _, layer in layers[: len(layers) - n]:
            layer.requires_grad_(False)

    def train(self, mode: bool = True) -> TimmClassifier:
        """Set train/eval mode; BatchNorm layers whose parameters are all frozen stay in eval mode."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        side = min(x.shape[-2:])
        minimum = _MIN_SIZE.get(self.name.split(".")[0])
        if minimum is not None and side < minimum:
            raise ConfigError(f"{self.name} needs inputs of at least {minimum} px, got {tuple(x.shape[-2:])}")
        embed = getattr(self.backbone, "patch_embed", None)
        if embed is not None and getattr(embed, "strict_img_size", False):
            expected = tuple(embed.img_size)
            if tuple(x.shape[-2:]) != expected:
                raise ConfigError(
                    f"{self.name} was built for {expected} input but got {tuple(x.shape[-2:])}; set "
                    "model.net.init_args.img_size to the data's image_size"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``."""
        self._check_input(x)
        return self.head(self.backbone(x))


def _create_backbone(
    name: str, pretrained: bool, weights_file: str | None, in_channels: int, img_size: int | None
) -> nn.Module:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown timm model {name!r}{hint}; list the names with "
            "python -c \"import timm; print(timm.list_models('resnet*'))\""
        )
    kwargs: dict = {"num_classes": 0, "in_chans": in_channels}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if weights_file is not None:
        if not Path(weights_file).is_file():
            raise ConfigError(f"weights_file {weights_file} does not exist; give a .pth or .safetensors file")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        if img_size is not None and "img_size" in str(err):
            raise ConfigError(f"{name} does not take img_size; leave model.net.init_args.img_size unset") from err
        raise
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not load pretrained weights for {name} ({type(err).__name__}: {str(err)[:200]}); without "
            "network access download them elsewhere (e.g. huggingface_hub.hf_hub_download('timm/<name>...', "
            "'model.safetensors')) and set model.net.init_args.weights_file to that file, or set pretrained: false"
        ) from err
