"""The common face of every network: forward_features/forward_head, reset_classifier, cam_layer, preprocessing."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models import (
    CNN9,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNet3,
    SegClsOutput,
    SmallCNN,
    TimmClassifier,
    UNetWithClassifier,
)
from tumorlab.models.face import tokens_to_map
from tumorlab.models.preprocessing import FROM_SCRATCH, Preprocessing

SIDE = 32


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    channels: int
    features: tuple[int, ...]  # forward_features' shape (the bottleneck's for the U-Net) for 2 images
    cam_map: tuple[int, int, int, int]  # cam_layer's output after cam_reshape
    pre_logits: int  # width of forward_head(..., pre_logits=True)
    mean: tuple[float, ...]
    image_size: int | None
    source: str  # a part of preprocessing.source


VIT_HALF = (0.5, 0.5, 0.5)
CASES = {
    "CNN9": Case(
        lambda: CNN9(in_channels=1, num_classes=3, width=8),
        channels=1, features=(2, 64, 2, 2), cam_map=(2, 64, 4, 4), pre_logits=64,
        mean=IMAGENET_MEAN, image_size=None, source=FROM_SCRATCH,
    ),
    "SmallCNN": Case(
        lambda: SmallCNN(num_classes=3, image_size=SIDE),
        channels=3, features=(2, 64, 4, 4), cam_map=(2, 64, 8, 8), pre_logits=16,
        mean=IMAGENET_MEAN, image_size=SIDE, source=FROM_SCRATCH,
    ),
    "ResNet3": Case(
        lambda: ResNet3(num_classes=3, width=8, dropout=0.5),
        channels=3, features=(2, 32, 4, 4), cam_map=(2, 32, 4, 4), pre_logits=32,
        mean=IMAGENET_MEAN, image_size=None, source=FROM_SCRATCH,
    ),
    "resnet18": Case(
        lambda: TimmClassifier("resnet18", num_classes=3, dropout=0.5),
        channels=3, features=(2, 512, 1, 1), cam_map=(2, 512, 1, 1), pre_logits=512,
        mean=IMAGENET_MEAN, image_size=None, source="timm pretrained_cfg of resnet18",
    ),
    "efficientnet_b0": Case(
        # cam_layer is the last stage (blocks.6, 320 channels), before the 1×1 conv_head to 1280
        lambda: TimmClassifier("efficientnet_b0", in_channels=1, num_classes=3),
        channels=1, features=(2, 1280, 1, 1), cam_map=(2, 320, 1, 1), pre_logits=1280,
        mean=IMAGENET_MEAN, image_size=None, source="timm pretrained_cfg of efficientnet_b0",
    ),
    "vit": Case(
        # 32 px in 16 px patches: the class token, then 2×2 patch tokens
        lambda: TimmClassifier("vit_tiny_patch16_224", image_size=SIDE, num_classes=3),
        channels=3, features=(2, 5, 192), cam_map=(2, 192, 2, 2), pre_logits=192,
        mean=VIT_HALF, image_size=SIDE, source="timm pretrained_cfg of vit_tiny_patch16_224",
    ),
    "UNet": Case(
        lambda: UNetWithClassifier(
            "resnet18", in_channels=1, num_classes=3, encoder_depth=3, decoder_channels=(16, 8, 4)
        ),
        channels=1, features=(2, 128, 4, 4), cam_map=(2, 128, 4, 4), pre_logits=128,
        mean=IMAGENET_MEAN, image_size=None, source=FROM_SCRATCH,
    ),
}  # fmt: skip


@functools.cache
def _built(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[name].build().eval()


def _fresh(name: str) -> nn.Module:
    return copy.deepcopy(_built(name))


def _input(name: str) -> torch.Tensor:
    return torch.randn(2, CASES[name].channels, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def _logits(out: torch.Tensor | SegClsOutput) -> torch.Tensor:
    return out.class_logits if isinstance(out, SegClsOutput) else out


def _final_linear(net: nn.Module) -> nn.Linear:
    head = net.net.classification_head if isinstance(net, UNetWithClassifier) else net.head
    return [m for m in head if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_is_head_of_features(name):
    net, x, case = _built(name), _input(name), CASES[name]
    with torch.no_grad():
        features = net.forward_features(x)
        out, again = net(x), net.forward_head(features)
    deepest = features[-1] if isinstance(net, UNetWithClassifier) else features
    assert tuple(deepest.shape) == case.features
    assert type(out) is type(again)
    if isinstance(out, SegClsOutput):
        assert out.mask_logits.shape == (2, 1, SIDE, SIDE) and torch.allclose(out.mask_logits, again.mask_logits)
    assert _logits(out).shape == (2, 3) and torch.allclose(_logits(out), _logits(again))


def test_unet_face_matches_smp_forward():
    net, x = _built("UNet"), _input("UNet")
    with torch.no_grad():
        ours, (mask_logits, class_logits) = net(x), net.net(x)
    assert torch.equal(ours.mask_logits, mask_logits) and torch.equal(ours.class_logits, class_logits)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pre_logits_is_what_the_final_linear_layer_reads(name):
    net, x = _built(name), _input(name)
    with torch.no_grad():
        features = net.forward_features(x)
        pooled = net.forward_head(features, pre_logits=True)
        logits = _logits(net(x))
    assert pooled.shape == (2, CASES[name].pre_logits)
    assert torch.allclose(_final_linear(net)(pooled), logits, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reset_classifier_changes_the_output_width_only(name):
    net = _fresh(name)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.reset_classifier(5)
    assert net.num_classes == 5 and _final_linear(net).out_features == 5
    with torch.no_grad():
        assert _logits(net(_input(name))).shape == (2, 5)
    after = net.state_dict()
    assert after.keys() == before.keys(), "state-dict keys stay stable"
    changed = {k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])}
    assert len(changed) == 2 and all(k.endswith(("weight", "bias")) for k in changed), changed
    with pytest.raises(ConfigError, match="num_classes must be at least 2"):
        net.reset_classifier(1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cam_layer_gives_a_map_the_logits_depend_on(name):
    net, case = _built(name), CASES[name]
    assert any(m is net.cam_layer for m in net.modules())
    assert (net.cam_reshape is None) == (name != "vit")
    seen = []
    handle = net.cam_layer.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        logits = _logits(net(_input(name)))
    finally:
        handle.remove()
    assert len(seen) == 1, "cam_layer runs once per forward"
    grad = torch.autograd.grad(logits[:, 0].sum(), seen[0])[0]  # what Grad-CAM weights the map with
    assert grad.abs().sum() > 0
    cam_map = seen[0] if net.cam_reshape is None else net.cam_reshape(seen[0])
    assert tuple(cam_map.shape) == case.cam_map


@pytest.mark.parametrize("name", sorted(CASES))
def test_declared_preprocessing(name):
    pre, case = _built(name).preprocessing, CASES[name]
    assert isinstance(pre, Preprocessing)
    assert pre.mean == pytest.approx(case.mean)
    assert pre.std == pytest.approx(VIT_HALF if case.mean == VIT_HALF else IMAGENET_STD)
    assert pre.image_size == case.image_size
    assert case.source in pre.source


def test_timm_preprocessing_falls_back_to_imagenet_without_rgb_statistics():
    net = _fresh("vit")
    net.backbone.pretrained_cfg = {**net.backbone.pretrained_cfg, "mean": (0.5,), "std": (0.5,)}
    pre = net.preprocessing
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD and pre.image_size == SIDE
    assert "ImageNet statistics" in pre.source and "no 3-channel mean/std" in pre.source


def test_unet_preprocessing_of_pretrained_encoder_weights(monkeypatch):
    import segmentation_models_pytorch as smp

    from tumorlab.models import unet

    asked = []

    def params(encoder_name, pretrained="imagenet"):
        asked.append((encoder_name, pretrained))
        return {"input_space": "RGB", "input_range": [0, 1], "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}

    monkeypatch.setattr(smp.encoders, "get_preprocessing_params", params)
    pre = unet._smp_preprocessing("resnet34", "imagenet")
    assert asked == [("resnet34", "imagenet")]
    assert pre == Preprocessing((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), None, "smp imagenet weights of resnet34")
    assert unet._smp_preprocessing("resnet34", None).source == FROM_SCRATCH


def test_unet_input_sides_must_fit_the_output_stride():
    net = _built("UNet")
    assert net.output_stride == 2**3
    with pytest.raises(ConfigError, match=r"multiples of 8; got 36×36.*multiple of 8 \(e.g. 40\)"):
        net(torch.randn(1, 1, 36, 36))


def test_tokens_to_map_drops_prefix_tokens_and_keeps_patch_order():
    n, d, grid = 2, 4, (2, 3)
    patches = torch.arange(n * 6 * d, dtype=torch.float32).reshape(n, 6, d)  # patch p = (row p // 3, col p % 3)
    tokens = torch.cat([torch.full((n, 2, d), -1.0), patches], dim=1)  # class + distillation token first
    cam_map = tokens_to_map(tokens, grid, num_prefix_tokens=2)
    assert cam_map.shape == (n, d, 2, 3)
    assert cam_map[1, 3, 1, 2] == patches[1, 5, 3] and cam_map[0, 2, 0, 1] == patches[0, 1, 2]
    assert torch.equal(tokens_to_map(patches, grid, num_prefix_tokens=2), cam_map), "patch tokens only"
    with pytest.raises(ValueError, match="cannot reshape 7 tokens to a 2×3 patch grid"):
        tokens_to_map(tokens[:, :7], grid, num_prefix_tokens=2)


def test_weights_file_of_another_architecture_names_the_keys(tmp_path):
    path = tmp_path / "resnet18_backbone.pth"
    torch.save(_built("resnet18").backbone.state_dict(), path)
    with pytest.raises(ConfigError) as info:
        TimmClassifier("efficientnet_b0", weights_file=str(path))
    message = str(info.value)
    assert f"weights_file {path} does not fit timm model efficientnet_b0" in message
    assert "missing keys (conv_stem.weight" in message
    assert "unexpected keys (conv1.weight, layer1.0.conv1.weight" in message
    assert "shape mismatches (bn1.weight (file (64,), model (32,))" in message


def test_weights_file_whose_shapes_agree_but_keys_are_missing(tmp_path):
    # timm loads a backbone without its classifier non-strictly: resnet18 weights fit the first blocks of a
    # resnet34 and would load silently, leaving the extra blocks random.
    path = tmp_path / "resnet18_backbone.pth"
    torch.save(_built("resnet18").backbone.state_dict(), path)
    with pytest.raises(ConfigError, match=r"resnet34: \d+ missing keys \(layer1\.2\.conv1\.weight") as info:
        TimmClassifier("resnet34", weights_file=str(path))
    assert "unexpected" not in str(info.value)


def test_weights_file_with_classifier_and_three_channels_loads_into_one_channel(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False)  # with its 1000-class fc
    path = tmp_path / "resnet18_full.pth"
    torch.save(reference.state_dict(), path)
    net = TimmClassifier("resnet18", in_channels=1, weights_file=str(path))
    # timm adapts a 3-channel stem to one channel by summing over the input channels
    assert torch.allclose(net.backbone.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert "assumed for weights_file" in net.preprocessing.source


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"could not read weights_file {path} for timm model resnet18"):
        TimmClassifier("resnet18", weights_file=str(path))


def test_preprocessing_validates_its_numbers():
    with pytest.raises(ValueError, match="three RGB means"):
        Preprocessing((0.5,), (0.5,), None, "grey")
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocessing((0.5, 0.5, 0.5), (0.5, 0.0, 0.5), None, "zero")
    pre = Preprocessing([0, 1, 0], [1, 1, 1], 8, "lists")
    assert pre.mean == (0.0, 1.0, 0.0) and isinstance(pre.mean, tuple)
    with pytest.raises(AttributeError):
        pre.image_size = 16
