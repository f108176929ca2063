"""The class-activation maps of ``tumorlab cam``: which layer they hook, how they are computed, and where they may
point (the brain).

- The layer: the network's ``cam_layer`` by default (``cam_target_layer``), or any module by its name as
  ``net.named_modules()`` gives it (``--layer``, ``resolve_layer``); ``layer_shape`` is its map's size.
- The map: pytorch-grad-cam (Grad-CAM, Grad-CAM++, Score-CAM, LayerCAM, HiResCAM) of the class logits
  (``ClassLogits`` picks the multi-task U-Net's ``class_logits``), scaled to [0, 1] per image by the library.
- ``--restrict brain``: ``brain_mask`` of the prepared input slice; ``restrict`` zeroes the map outside it and
  rescales it to [0, 1] inside, as the library scales over the whole image.
"""

from __future__ import annotations

import contextlib
import difflib
import io
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.evaluation.localisation import DEFAULT_TOLERANCE, DEFAULT_TOP

__all__ = [
    "METHODS",
    "RESTRICTIONS",
    "ClassLogits",
    "Maps",
    "brain_mask",
    "build_maps",
    "cam_extractor",
    "cam_target_layer",
    "compute_cams",
    "layer_name",
    "layer_shape",
    "pad_images",
    "predict",
    "resolve_layer",
    "restrict",
]

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam", "hirescam")
RESTRICTIONS = ("none", "brain")


class ClassLogits(nn.Module):
    """The network with ``class_logits`` as its only output (the multi-task U-Net's head; others unchanged)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return getattr(out, "class_logits", out)


def cam_target_layer(net: nn.Module) -> nn.Module:
    """The module to hook: the network's ``cam_layer`` (for a ViT its last block's ``norm1``, see
    ``TimmClassifier``)."""
    layer = getattr(net, "cam_layer", None)
    if not isinstance(layer, nn.Module):
        raise ConfigError(f"{type(net).__name__} has no cam_layer to compute a class-activation map on")
    return layer


def resolve_layer(net: nn.Module, name: str) -> nn.Module:
    """The module of ``net`` named ``name`` (as ``net.named_modules()`` names it); an unknown name is a
    ``ConfigError`` listing the closest valid names."""
    modules = dict(net.named_modules())
    modules.pop("", None)  # the network itself: not a layer
    if name in modules:
        return modules[name]
    names = list(modules)
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:: max(1, len(names) // 5)][:5]
    default = getattr(net, "cam_layer", None)
    default = next((n for n, m in modules.items() if m is default), None) if isinstance(default, nn.Module) else None
    hint = f"{default} (the default), " if default and default not in near else ""
    raise ConfigError(
        f"--layer {name!r}: no such module in {type(net).__name__} ({len(names)} modules, as named_modules() names "
        f"them); e.g. {hint}{', '.join(near)}"
    )


def layer_name(net: nn.Module, layer: nn.Module) -> str:
    """The name of ``layer`` inside ``net`` (``named_modules``), or its class name where it is not one of them."""
    return next((n for n, m in net.named_modules() if m is layer and n), type(layer).__name__)


def layer_shape(net: nn.Module, layer: nn.Module, image: torch.Tensor, gradient: bool = True) -> list[int]:
    """The spatial size ``[h, w]`` of ``layer``'s output for one input ``image`` ``(C, H, W)`` (after
    ``net.cam_reshape`` for token layers); ``[]`` where the output has no spatial map. With ``gradient`` (the
    gradient methods need it) a layer the class logits do not depend on, such as a U-Net's decoder for its
    classification head, is a ``ConfigError``."""
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        device = next(net.parameters()).device
        with torch.enable_grad():
            logits = ClassLogits(net).eval()(image[None].to(device))
    finally:
        handle.remove()
    out = seen[0] if seen else None
    out = out[0] if isinstance(out, tuple | list) else out
    if gradient and isinstance(out, torch.Tensor) and out.requires_grad:
        (grad,) = torch.autograd.grad(logits.sum(), out, allow_unused=True)
        if grad is None:
            name = layer_name(net, layer)
            raise ConfigError(
                f"--layer {name}: the class logits of {type(net).__name__} do not depend on it (no gradient reaches "
                "it); pick a layer on the way to the classifier, or --method scorecam"
            )
    reshape = getattr(net, "cam_reshape", None)
    if reshape is not None and isinstance(out, torch.Tensor):
        out = reshape(out.detach())
    return list(out.shape[2:]) if isinstance(out, torch.Tensor) and out.ndim == 4 else []


def cam_extractor(net: nn.Module, method: str = "gradcam", layer: str | None = None):
    """A pytorch-grad-cam object for ``net``: the module named ``layer`` (default: ``cam_target_layer``, for an
    ensemble every member's), ``cam_reshape`` and the class logits."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "layercam": LayerCAM,
               "hirescam": HiResCAM}  # fmt: skip
    if method not in classes:
        raise ConfigError(f"--method must be one of {list(classes)}, got {method!r}")
    if layer is not None:
        layers = [resolve_layer(net, layer)]
    else:  # an ensemble (EnsembleNet) has one layer per member: pytorch-grad-cam averages the members' maps
        layers = getattr(net, "cam_layers", None) or [cam_target_layer(net)]
    reshape = getattr(net, "cam_reshape", None)
    extractor = classes[method](model=ClassLogits(net), target_layers=layers, reshape_transform=reshape)
    if method == "scorecam":
        extractor.batch_size = 64  # masked copies of the input per forward pass (the library's default is 16)
    return extractor


def compute_cams(extractor, images: torch.Tensor, targets: list[int]) -> np.ndarray:
    """CAMs ``(N, H, W)`` in [0, 1] (scaled per image by the library) of ``images`` for the ``targets`` classes."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM draws a tqdm bar per image
        cams = extractor(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.nan_to_num(np.asarray(cams, dtype=np.float32))


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, C)`` (on the CPU) of ``images``, run where ``net`` lies."""
    device = next(net.parameters()).device
    return ClassLogits(net).eval()(images.to(device)).softmax(dim=1).cpu()


@dataclass
class Maps:
    """How the maps of ``CamItem``s (``tumorlab.evaluation.cam``) are made and judged: the pytorch-grad-cam
    ``extractor`` (its ``method`` on the ``layer`` named so), the ``restriction`` (``none`` or ``brain``: the map
    zeroed outside ``brain_mask``) and the localisation scores' ``tolerance`` and ``top``."""

    extractor: object
    method: str = "gradcam"
    layer: str = ""
    restriction: str = "none"
    tolerance: float = DEFAULT_TOLERANCE
    top: float = DEFAULT_TOP
    pad: int = 0
    background: tuple[float, ...] = ()

    def region(self, item) -> np.ndarray | None:
        """The pixels the map of ``item`` may point at: its brain under ``--restrict brain``, else all."""
        return brain_mask(item.display) if self.restriction == "brain" else None

    def inputs(self, batch: list) -> torch.Tensor:
        """What the network sees of ``batch``: the tensors, each in a canvas of ``background`` ``pad`` px wide."""
        images = torch.stack([it.tensor for it in batch])
        return pad_images(images, self.pad, self.background) if self.pad else images

    def __call__(self, batch: list, targets: list[int]) -> list[np.ndarray]:
        """The maps of ``batch`` for the ``targets`` classes (cropped back from the canvas, rescaled to [0, 1]
        there as the library scales them), restricted where asked."""
        cams = compute_cams(self.extractor, self.inputs(batch), targets)
        if self.pad:
            p = self.pad
            cams = [restrict(c[p:-p, p:-p], np.ones(c[p:-p, p:-p].shape, dtype=bool)) for c in cams]
        regions = [self.region(it) for it in batch]
        return [cam if r is None else restrict(cam, r) for cam, r in zip(cams, regions, strict=True)]

    @property
    def columns(self) -> dict[str, object]:
        """What ``cams.csv`` and ``localisation.json`` record of the maps."""
        return {"method": self.method, "layer": self.layer, "restriction": self.restriction, "pad_px": self.pad}


def build_maps(
    net: nn.Module, first: list, method: str = "gradcam", layer: str | None = None, restriction: str = "none",
    tolerance: float = DEFAULT_TOLERANCE, top: float = DEFAULT_TOP, pad: int = 0, mean=(), std=(),
) -> tuple[Maps, list[int]]:  # fmt: skip
    """The ``Maps`` of ``net`` (``cam_extractor``; ``pad`` with the normalised black of ``mean``/``std``) and the
    hooked map's size (``layer_shape`` of the first item of ``first``, ``[]`` without one), checked on it: a
    layer the class logits do not depend on, or a canvas the network cannot take, is a ``ConfigError``."""
    extractor = cam_extractor(net, method, layer)
    hooked = extractor.target_layers
    name = ", ".join(layer_name(net, m) for m in hooked) if layer is None else layer
    black = tuple((0.0 - m) / s for m, s in zip(mean, std, strict=True))  # a zero pixel, normalised
    maps = Maps(extractor, method, name, restriction, tolerance, top, pad, black)
    if not first:
        return maps, []
    image = maps.inputs(first)[0]
    if pad:
        try:
            with torch.no_grad():
                ClassLogits(net).eval()(image[None].to(next(net.parameters()).device))
        except (RuntimeError, ValueError, ConfigError) as e:  # a U-Net's sides must divide by 2^depth, a ViT's fixed
            size = "×".join(map(str, image.shape[1:]))
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(
                f"--pad {pad}: {type(net).__name__} cannot take {size} px inputs ({first_line})"
            ) from None
    return maps, layer_shape(net, hooked[0], image, method != "scorecam")


def pad_images(images: torch.Tensor, pad: int, background: tuple[float, ...]) -> torch.Tensor:
    """``images`` ``(N, C, H, W)`` in the middle of a canvas ``pad`` px wider on each side, filled per channel with
    ``background`` (a black pixel after normalisation): the network's zero padding then lies in background, not at
    the slice's edge."""
    n, c, h, w = images.shape
    fill = torch.as_tensor(background, dtype=images.dtype).view(1, c, 1, 1)
    canvas = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    canvas[:, :, pad : pad + h, pad : pad + w] = images
    return canvas


# --- where the map may point ------------------------------------------------------------------------------------


def brain_mask(display: np.ndarray) -> np.ndarray:
    """The brain (head) of a prepared slice ``(S, S, C)`` uint8: its non-background pixels, as booleans ``(S, S)``.

    The brightest channel, blurred (Gaussian, 3×3), is thresholded at Otsu's level (OpenCV; the background's
    level differs between scanners, so no fixed one), closed with a 3×3 structuring element (scipy.ndimage,
    2 iterations), its holes filled, and its largest connected component kept. A slice without foreground (all
    one level) gives the whole image: nothing is excluded there.
    """
    grey = display.max(axis=2) if display.ndim == 3 else display
    grey = cv2.GaussianBlur(np.ascontiguousarray(grey, dtype=np.uint8), (3, 3), 0)
    if int(grey.max()) == int(grey.min()):
        return np.ones(grey.shape, dtype=bool)
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # padded by the edge's own pixels first, so that the closing's erosion does not eat a brain touching the edge
    padded = np.pad(binary > 0, 2, mode="edge")
    brain = ndimage.binary_closing(padded, structure=np.ones((3, 3)), iterations=2)[2:-2, 2:-2]
    brain = ndimage.binary_fill_holes(brain)
    labels, count = ndimage.label(brain)
    if count == 0:
        return np.ones(grey.shape, dtype=bool)
    sizes = ndimage.sum_labels(brain, labels, index=range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def restrict(cam: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The CAM zeroed outside ``region`` and min-max scaled to [0, 1] inside it (all zero where flat there)."""
    region = np.asarray(region, dtype=bool)
    inside = cam[region]
    lo, hi = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 0.0)
    scaled = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    return np.where(region, scaled, 0.0).astype(np.float32)
