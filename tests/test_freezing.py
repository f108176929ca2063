"""What trains: timm's parameter groups (trainable_blocks) and Keras-style layers (trainable_layers), for every
timm family the configs use, counted against an independent listing of the model's parameters."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models import TimmClassifier, parameterised_layers

# One small member of every timm family in configs/ (built with random weights: only the structure matters).
FAMILIES = [
    "resnet10t",
    pytest.param("vgg11", marks=pytest.mark.slow),  # 129 M parameters: 2 s to build
    "densenet121",
    "efficientnet_b0",
    "inception_v3",
    "xception41",
    "vit_tiny_patch16_224",
    "convnext_atto",
    "swin_tiny_patch4_window7_224",
]


def _trainable(net: nn.Module) -> set[str]:
    return {n for n, p in net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", FAMILIES)
def test_trainable_blocks_trains_the_last_groups_and_the_head(name):
    from timm.models import group_parameters

    net = TimmClassifier(name, num_classes=3, trainable_blocks=2)
    groups = group_parameters(net.backbone, net.backbone.group_matcher(coarse=False))
    ordered = [groups[k] for k in sorted(groups)]
    assert len(ordered) >= 3
    head = {f"head.{n}" for n, _ in net.head.named_parameters()}
    expected = {f"backbone.{n}" for g in ordered[-2:] for n in g} | head
    assert _trainable(net) == expected
    backbone = sum(p.numel() for p in net.backbone.parameters())
    trains = sum(p.numel() for p in net.backbone.parameters() if p.requires_grad)
    assert 0 < trains < backbone
    rows = net.trainable_groups()
    assert [t for _, t in rows] == [False] * (len(ordered) - 2) + [True, True, True] and rows[-1][0] == "head"


@pytest.mark.parametrize("name", FAMILIES)
def test_trainable_layers_trains_exactly_that_many_layers(name):
    net = TimmClassifier(name, num_classes=3, trainable_layers=10)
    layers = parameterised_layers(net)
    training = [n for n, m in layers if any(p.requires_grad for p in m.parameters(recurse=False))]
    assert training == [n for n, _ in layers[-10:]], "the last 10 layers train, no other"
    for _, m in layers[-10:]:
        assert all(p.requires_grad for p in m.parameters(recurse=False))
    own = {id(p) for _, m in layers[-10:] for p in m.parameters(recurse=False)}
    assert all(p.requires_grad == (id(p) in own) for p in net.parameters())
    # the head is 1 layer: the 9 others are backbone layers, so much more than the head trains
    head = sum(p.numel() for p in net.head.parameters())
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) > 2 * head


def test_vit_trainable_layers_does_not_freeze_the_blocks_through_its_top_module():
    net = TimmClassifier("vit_tiny_patch16_224", num_classes=4, trainable_layers=10)
    assert not net.backbone.cls_token.requires_grad and not net.backbone.pos_embed.requires_grad
    assert net.backbone.norm.weight.requires_grad and net.backbone.blocks[-1].mlp.fc2.weight.requires_grad
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) > 500_000  # head alone: 772


def test_trainable_blocks_zero_trains_the_head_only_and_frozen_batchnorm_keeps_statistics():
    net = TimmClassifier("resnet10t", num_classes=4, trainable_blocks=0)
    assert _trainable(net) == {"head.1.weight", "head.1.bias"}
    net.train()
    bn = next(m for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net(torch.randn(2, 3, 32, 32))
    assert not bn.training and torch.equal(bn.running_mean, before)


def test_trainable_blocks_beyond_the_group_count_is_refused():
    from tumorlab.models.freezing import timm_groups

    n = len(timm_groups(TimmClassifier("resnet10t").backbone))  # counted here: it changes with timm's version
    message = rf"trainable_blocks is 50 but resnet10t has {n} timm parameter groups .*0\.\.{n}$"
    with pytest.raises(ConfigError, match=message):
        TimmClassifier("resnet10t", trainable_blocks=50)
    with pytest.raises(ConfigError, match="set only one of"):
        TimmClassifier("resnet10t", trainable_blocks=1, trainable_layers=3)


def test_pretrained_size_is_read_from_timm():
    from tumorlab.models.timm_backbone import create_backbone, pretrained_side

    assert pretrained_side(create_backbone("inception_v3", False, None, 3, None), None) == 299
    assert pretrained_side(create_backbone("xception41", False, None, 3, None), None) == 299
    assert pretrained_side(create_backbone("vit_tiny_patch16_224", False, None, 3, 64), None) == 224


def test_random_init_never_warns_about_the_pretrained_size():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TimmClassifier("inception_v3", num_classes=2, image_size=128)
