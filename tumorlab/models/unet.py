"""A U-Net that segments the tumour and classifies the slice, built on segmentation_models_pytorch.

smp's ``Unet`` assembles encoder -> decoder -> segmentation head and, given ``aux_params``, a
classification head (global pooling, dropout, linear) on the deepest encoder features. This wrapper
exposes those choices as typed arguments and always returns the same ``SegClsOutput``.

The face follows the classifiers': ``forward_features`` is the list of encoder feature maps, ``forward_head``
runs decoder, segmentation head and classification head on them. ``cam_layer`` is ``bottleneck``, an identity
tap on the deepest encoder map (the last encoder stage's output, which both heads read), so a Grad-CAM hooks
the same tensor for any smp encoder. Inputs must have sides divisible by ``output_stride`` (2**encoder_depth).

``encoder_weights_file`` initialises a timm encoder (smp's ``tu-<timm name>``, e.g. ``tu-tf_efficientnet_lite0``)
from a local timm weights file, such as one made by ``tumorlab weights import``: every encoder tensor must be in
the file with its shape (the first convolution is adapted to ``in_channels`` as timm does); the file's tensors
the encoder does not use (the classifier, the layers after the deepest stage used) are counted and printed.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal, NamedTuple

import segmentation_models_pytorch as smp
import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.face import TumorNet, replace_linear, run_head
from tumorlab.models.preprocessing import Preprocessing
from tumorlab.models.weights import resolve_weights_file, starting_weights_skipped

__all__ = ["SegClsOutput", "UNetWithClassifier", "load_encoder_file"]


class SegClsOutput(NamedTuple):
    """``mask_logits``: (N, mask_channels, H, W) logits per pixel (1: tumour; BraTS: one per region);
    ``class_logits``: (N, num_classes)."""

    mask_logits: torch.Tensor
    class_logits: torch.Tensor


class UNetWithClassifier(TumorNet):
    """U-Net with any smp encoder and a classification head on the encoder bottleneck.

    Args:
        encoder_name: an encoder smp knows (``resnet18``, ``resnet34``, ``efficientnet-b0``, ``mobilenet_v2`` ...).
        encoder_weights: ``"imagenet"`` (or another name smp lists for the encoder) to start from pretrained
            weights, which smp downloads on first use; ``None`` for random initialisation.
        encoder_weights_file: a local timm weights file (``.safetensors``/``.pth``) for a ``tu-`` encoder, instead
            of ``encoder_weights``; a sidecar made by ``tumorlab weights import`` must name the same architecture.
            Normalisation then follows the file's sidecar (mean, std), else timm's ``pretrained_cfg``.
        in_channels: input channels (3 for the LGG slices, one per modality for volumes).
        num_classes: classes of the slice-level head (2: no tumour / tumour).
        mask_channels: output channels of the segmentation head, each an independent sigmoid: 1 (tumour), or
            one per region of a volume data set's label map (BraTS: whole tumour, tumour core, enhancing).
        encoder_depth: encoder stages used (3-5); fewer stages are cheaper and see less context.
        decoder_channels: channels of the decoder blocks, one per encoder stage, deepest first.
        head_dropout: dropout before the classification head's linear layer.
        pooling: global pooling of the classification head.

    Attributes:
        output_stride: the encoder's total downsampling; input height and width must be multiples of it.
    """

    def __init__(
        self,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        mask_channels: int = 1,
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        head_dropout: float = 0.2,
        pooling: Literal["avg", "max"] = "avg",
        encoder_weights_file: str | None = None,
    ) -> None:
        super().__init__()
        known = smp.encoders.get_encoder_names()
        timm_encoder = encoder_name.startswith("tu-") and _is_timm_model(encoder_name[3:])
        if encoder_name not in known and not timm_encoder:
            examples = ", ".join(n for n in ("resnet18", "resnet34", "efficientnet-b0", "mobilenet_v2") if n in known)
            raise ConfigError(
                f"unknown smp encoder {encoder_name!r}; use one of smp.encoders.get_encoder_names(), e.g. {examples}, "
                "or tu-<timm model name> for a timm encoder (tu-tf_efficientnet_lite0)"
            )
        if len(decoder_channels) != encoder_depth:
            raise ConfigError(
                f"decoder_channels has {len(decoder_channels)} entries but encoder_depth is {encoder_depth}; "
                "give one decoder width per encoder stage"
            )
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2 (a softmax head), got {num_classes}")
        if mask_channels < 1:
            raise ConfigError(f"mask_channels must be at least 1, got {mask_channels}")
        if encoder_weights_file is not None and (encoder_weights is not None or not encoder_name.startswith("tu-")):
            raise ConfigError(
                f"encoder_weights_file needs a timm encoder (tu-<timm name>, e.g. tu-tf_efficientnet_lite0) and "
                f"encoder_weights: null; got encoder_name {encoder_name!r}, encoder_weights {encoder_weights!r}"
            )
        self.num_classes = num_classes
        self.in_channels, self.mask_channels = in_channels, mask_channels
        self.net = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=mask_channels,
            aux_params={"classes": num_classes, "dropout": head_dropout, "pooling": pooling},
        )
        _drop_unused_stages(self.net.encoder, encoder_depth)
        self.output_stride: int = self.net.encoder.output_stride
        self.bottleneck = nn.Identity()
        # Computed now: smp reads the statistics from the config.json it fetched with the weights.
        self._preprocessing = _smp_preprocessing(encoder_name, encoder_weights)
        self.encoder_weights_file = encoder_weights_file
        if encoder_weights_file is not None:
            self._preprocessing = _timm_preprocessing(encoder_name[3:], encoder_weights_file)
            if not starting_weights_skipped():  # else a checkpoint replaces every weight
                load_encoder_file(self.net.encoder.model, encoder_name[3:], resolve_weights_file(encoder_weights_file))

    @property
    def segmentation_parameters(self) -> list[nn.Parameter]:
        """Parameters of the decoder and the segmentation head (not of the shared encoder)."""
        return [*self.net.decoder.parameters(), *self.net.segmentation_head.parameters()]

    @property
    def classification_parameters(self) -> list[nn.Parameter]:
        """Parameters of the classification head."""
        return list(self.net.classification_head.parameters())

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, input first and the bottleneck ``(N, C, H/output_stride, W/...)`` last."""
        # Skipped while tracing or compiling (ONNX export, torch.compile), as smp does: shapes are symbolic there.
        if not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_input(x)
        return self.net.encoder(x)

    def _check_input(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        s = self.output_stride
        if h % s or w % s:
            raise ConfigError(
                f"UNetWithClassifier downsamples by {s} (2**encoder_depth), so input sides must be multiples of "
                f"{s}; got {h}×{w}: set the data's image_size to a multiple of {s} (e.g. {-(-max(h, w) // s) * s})"
            )

    def forward_head(  # type: ignore[override]
        self, features: list[torch.Tensor], pre_logits: bool = False
    ) -> SegClsOutput | torch.Tensor:
        """``SegClsOutput`` of the encoder features; with ``pre_logits`` the classification head's pooled
        bottleneck vector ``(N, C)``."""
        deepest = self.bottleneck(features[-1])
        if pre_logits:
            return run_head(self.net.classification_head, deepest, pre_logits=True)
        mask_logits = self.net.segmentation_head(_decode(self.net.decoder, [*features[:-1], deepest]))
        return SegClsOutput(mask_logits, self.net.classification_head(deepest))

    def forward(self, x: torch.Tensor) -> SegClsOutput:
        """Mask logits ``(N, mask_channels, H, W)`` and class logits ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification head's linear layer by a new one with ``num_classes`` outputs."""
        replace_linear(self.net.classification_head, num_classes, type(self).__name__)
        self.num_classes = num_classes

    @property
    def cam_layer(self) -> nn.Module:
        """``bottleneck``: the identity tap on the last encoder stage's output, which the heads read."""
        return self.bottleneck

    @property
    def preprocessing(self) -> Preprocessing:
        """smp's statistics of ``encoder_weights``, or ImageNet's for an encoder trained from scratch."""
        return self._preprocessing


def _decode(decoder: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """Run smp's decoder: it takes the feature list (smp >= 0.5) or the features as arguments (older)."""
    params = inspect.signature(decoder.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return decoder(*features)
    return decoder(features)


def _smp_preprocessing(encoder_name: str, encoder_weights: str | None) -> Preprocessing:
    if encoder_weights is None:
        return Preprocessing.imagenet()
    try:
        params = smp.encoders.get_preprocessing_params(encoder_name, pretrained=encoder_weights)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"smp has no preprocessing settings for encoder {encoder_name!r} with encoder_weights "
            f"{encoder_weights!r} ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    source = f"smp {encoder_weights} weights of {encoder_name}"
    space, scale = params.get("input_space", "RGB"), list(params.get("input_range", [0, 1]))
    if space != "RGB" or scale != [0, 1]:
        # Preprocessing has no field for these; the source text at least says so.
        source += f" (the encoder expects {space} input in the range {scale})"
    fallback = f"ImageNet statistics (smp lists no 3-channel mean/std for {encoder_name} {encoder_weights})"
    return Preprocessing.from_stats(params.get("mean"), params.get("std"), source, fallback)


def _is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


def _timm_preprocessing(architecture: str, weights_file: str) -> Preprocessing:
    """timm's ``pretrained_cfg`` mean and std of ``architecture``: what its weights files were trained with."""
    import timm

    cfg = timm.models.get_pretrained_cfg(architecture)
    source = f"timm pretrained_cfg of {architecture} (encoder_weights_file {Path(weights_file).name})"
    fallback = f"ImageNet statistics (timm pretrained_cfg of {architecture} has no 3-channel mean/std)"
    return Preprocessing.from_stats(getattr(cfg, "mean", None), getattr(cfg, "std", None), source, fallback)


def load_encoder_file(encoder: nn.Module, architecture: str, path: Path) -> int:
    """Load timm weights file ``path`` of ``architecture`` into ``encoder`` (a timm features model); return the
    number of tensors loaded. Every encoder tensor must be in the file with its shape."""
    import timm
    from timm.models import adapt_input_conv

    from tumorlab.models.timm_backbone import check_sidecar
    from tumorlab.models.weights import read_checkpoint

    key = "encoder_weights_file"
    if not path.is_file():
        raise ConfigError(
            f"{key} {path} does not exist; give a .safetensors or .pth file (tumorlab weights import "
            "efficientnet-lite0 writes one for tu-tf_efficientnet_lite0)"
        )
    info = check_sidecar(path, architecture, key) or {}
    stored = read_checkpoint(path, key)
    wanted = encoder.state_dict()
    first_conv = f"{timm.models.get_pretrained_cfg(architecture).first_conv}.weight"
    if first_conv in stored and first_conv in wanted and stored[first_conv].shape[1] != wanted[first_conv].shape[1]:
        stored = {**stored, first_conv: adapt_input_conv(wanted[first_conv].shape[1], stored[first_conv])}
    missing = [k for k in wanted if k not in stored]
    shapes = [k for k in wanted if k in stored and stored[k].shape != wanted[k].shape]
    # Tensors the encoder leaves out must still belong to the architecture (its head, its unused last stages):
    # a deeper variant's extra blocks (lite1 in lite0) have shapes that agree and would load half the file.
    known = timm.create_model(architecture, pretrained=False).state_dict().keys()
    unexpected = [k for k in stored if k not in known]
    if missing or shapes or unexpected:
        shown = ", ".join((missing + shapes + unexpected)[:4])
        raise ConfigError(
            f"{key} {path} does not fit encoder tu-{architecture}: {len(missing)} missing, {len(shapes)} "
            f"mismatched and {len(unexpected)} unexpected tensors ({shown}); give a weights file of {architecture}"
        )
    if info.get("mean") and list(info["mean"]) != list(timm.models.get_pretrained_cfg(architecture).mean):
        raise ConfigError(f"{key} {path}: its sidecar mean {info['mean']} is not timm's for {architecture}")
    encoder.load_state_dict({k: stored[k] for k in wanted}, strict=True)
    print(f"encoder tu-{architecture}: {len(wanted)} tensors from {path} ({len(stored) - len(wanted)} unused)")
    return len(wanted)


def _drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Remove the stages a shallow ResNet-style encoder never runs.

    smp keeps ``layer3``/``layer4`` of a ResNet encoder even when ``encoder_depth`` < 5 stops before them:
    they would hold parameters that never get a gradient (dead weight in the optimiser, and an error under
    DDP without ``find_unused_parameters``). Stage ``layer<k>`` runs only when ``depth > k``.
    """
    for k in range(max(depth, 1), 5):
        if isinstance(getattr(encoder, f"layer{k}", None), nn.Module):
            delattr(encoder, f"layer{k}")
