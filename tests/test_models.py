"""Architectures: forward/backward, shapes, parameter counts, initialisation, freezing and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models import CNN9, ResNet3, SmallCNN, TimmClassifier, UNetWithClassifier, parameterised_layers
from tumorlab.models.init import NORMAL_STD, init_weights


def _count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


MODELS = {
    "CNN9": lambda c: CNN9(in_channels=c, num_classes=3, width=8),
    "SmallCNN": lambda c: SmallCNN(in_channels=c, num_classes=3, image_size=32),
    "ResNet3": lambda c: ResNet3(in_channels=c, num_classes=3, width=8),
    "TimmClassifier": lambda c: TimmClassifier("resnet18", in_channels=c, num_classes=3, dropout=0.5),
    "UNetWithClassifier": lambda c: UNetWithClassifier(
        "resnet18", in_channels=c, num_classes=3, encoder_depth=3, decoder_channels=(16, 8, 4)
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_backward_and_shapes(name, channels):
    torch.manual_seed(0)
    net = MODELS[name](channels)
    assert net.num_classes == 3 and net.in_channels == channels
    out = net(torch.randn(4, channels, 32, 32))
    logits = getattr(out, "class_logits", out)
    assert logits.shape == (4, 3)
    loss = logits.square().mean()
    if hasattr(out, "mask_logits"):
        assert out.mask_logits.shape == (4, 1, 32, 32)
        loss = loss + out.mask_logits.square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_small_cnn_has_the_keras_parameter_count_at_224():
    s, c, k = 224, 4, 3 * 3
    convs = (3 * k * 16 + 16) + (16 * k * 32 + 32) + (32 * k * 64 + 64)
    dense = (64 * (s // 8) ** 2 * 64 + 64) + 2 * 64 + (64 * 16 + 16) + 2 * 16 + (16 * c + c)
    net = SmallCNN(num_classes=c, image_size=s)
    assert _count(net) == convs + dense
    assert 3.1e6 < _count(net) < 3.3e6
    with pytest.raises(ConfigError, match="built for 224×224 input but got 64×64"):
        net.eval()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="multiple of 8"):
        SmallCNN(image_size=100)


def test_custom_models_parameter_counts_in_expected_ranges():
    cnn9 = CNN9(width=32)
    convs = [m for m in cnn9.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in cnn9.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 8 and len(linears) == 1, "nine weight layers"
    assert 1.0e6 < _count(cnn9) < 1.3e6
    assert 0.25e6 < _count(ResNet3(width=32)) < 0.35e6
    blocks = ResNet3().blocks
    assert len(blocks) == 3 and all(hasattr(b, "conv2") for b in blocks)


@pytest.mark.parametrize("scheme", ["normal", "xavier", "kaiming"])
def test_weight_initialisation(scheme):
    torch.manual_seed(0)
    net = CNN9(width=32, init=scheme)
    conv = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]  # the last one: 256 in, 256 out
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 256
    fan_in = conv.weight[0].numel()
    fan_out = conv.out_channels * conv.weight[0, 0].numel()
    expected = {"normal": NORMAL_STD, "xavier": (2 / (fan_in + fan_out)) ** 0.5, "kaiming": (2 / fan_in) ** 0.5}
    assert float(conv.weight.detach().std()) == pytest.approx(expected[scheme], rel=0.05)
    assert float(net.head[-1].bias.detach().abs().sum()) == 0.0


def test_default_initialisation_is_left_alone():
    torch.manual_seed(1)
    a = ResNet3(width=8)
    torch.manual_seed(1)
    b = init_weights(ResNet3(width=8), "default")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _trainable_layers(net: nn.Module) -> int:
    return sum(any(p.requires_grad for p in m.parameters(recurse=False)) for _, m in parameterised_layers(net))


def test_timm_freezing_modes():
    full = TimmClassifier("resnet18", num_classes=4)
    total = _count(full)
    assert _count(full, trainable=True) == total and 11.0e6 < total < 11.5e6

    head_only = TimmClassifier("resnet18", num_classes=4, freeze_backbone=True)
    assert _count(head_only, trainable=True) == 512 * 4 + 4
    head_only.reset_classifier(6)
    assert _count(head_only, trainable=True) == 512 * 6 + 6, "a new head is trainable, the backbone stays frozen"

    last10 = TimmClassifier("resnet18", num_classes=4, trainable_layers=10)
    layers = parameterised_layers(last10)
    expected = sum(_count(m) for _, m in layers[-10:])
    assert _count(last10, trainable=True) == expected and _trainable_layers(last10) == 10
    assert layers[-1][1] is last10.head[-1], "the head is the last layer"

    last10.train()
    frozen_bn = [m for m in last10.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad]
    live_bn = [m for m in last10.modules() if isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad]
    assert frozen_bn and live_bn
    assert not any(m.training for m in frozen_bn) and all(m.training for m in live_bn)
    before = frozen_bn[0].running_mean.clone()
    last10(torch.randn(2, 3, 32, 32))
    assert torch.equal(frozen_bn[0].running_mean, before), "frozen BatchNorm keeps its statistics"

    with pytest.raises(ConfigError, match=f"has {len(layers)} parameterised layers; choose 1..{len(layers)}"):
        TimmClassifier("resnet18", trainable_layers=500)
    with pytest.raises(ConfigError, match="set only one of trainable_layers, trainable_blocks and freeze_backbone"):
        TimmClassifier("resnet18", trainable_layers=3, freeze_backbone=True)


def test_timm_unknown_name_says_how_to_list():
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet1000'.*timm.list_models"):
        TimmClassifier("resnet1000")


def test_timm_weights_from_a_local_file(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = TimmClassifier("resnet18", weights_file=str(path), num_classes=2)
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)
    with pytest.raises(ConfigError, match="weights_file .*missing.pth does not exist"):
        TimmClassifier("resnet18", weights_file=str(tmp_path / "missing.pth"))


def test_timm_unreachable_weights_point_at_weights_file(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise FileNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="could not load pretrained weights for resnet18.*weights_file"):
        TimmClassifier("resnet18", pretrained=True)


@pytest.mark.slow
def test_timm_head_fits_backbones_with_a_pre_logits_block():
    vgg = TimmClassifier("vgg11", num_classes=3)  # VGG's pre-logits block widens 512 features to 4096
    assert vgg.head[-1].in_features == 4096
    assert vgg(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_timm_input_size_checks():
    vit = TimmClassifier("vit_tiny_patch16_224", image_size=32, num_classes=2)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(ConfigError, match=r"built for \(32, 32\) input but got \(64, 64\)"):
        vit(torch.randn(1, 3, 64, 64))
    inception = TimmClassifier("inception_v3", num_classes=2)
    with pytest.raises(ConfigError, match="at least 75 px"):
        inception(torch.randn(1, 3, 64, 64))
    resnet = TimmClassifier("resnet18", image_size=32)  # takes any size: the data's size is not passed on
    assert resnet(torch.randn(1, 3, 48, 48)).shape == (1, 2)


def test_custom_models_reject_bad_values():
    with pytest.raises(ConfigError, match="num_classes must be at least 2"):
        CNN9(num_classes=1)
    with pytest.raises(ConfigError, match="num_classes must be at least 2"):
        ResNet3(num_classes=1)
    with pytest.raises(ConfigError, match="dropout must lie in"):
        CNN9(dropout=1.0)
