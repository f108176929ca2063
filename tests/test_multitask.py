"""UNetWithClassifier and the weighted joint loss L = θ·L_seg + (1 − θ)·L_cls."""

from __future__ import annotations

import pytest
import torch

from tumorlab.errors import ConfigError
from tumorlab.models import SegClsOutput, UNetWithClassifier
from tumorlab.tasks import MultiTaskTask


def _net() -> UNetWithClassifier:
    return UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), num_classes=2)


def _batch(n: int = 4, size: int = 32) -> dict:
    torch.manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[: n // 2, :, 8:16, 8:16] = 1
    return {"image": torch.randn(n, 3, size, size), "mask": mask, "label": (mask.flatten(1).amax(1) > 0).long()}


def test_forward_shapes():
    out = _net()(torch.randn(2, 3, 32, 32))
    assert isinstance(out, SegClsOutput)
    assert out.mask_logits.shape == (2, 1, 32, 32) and out.class_logits.shape == (2, 2)


def _grads(theta: float) -> tuple[float, float, float]:
    task = MultiTaskTask(_net(), theta=theta)
    batch = _batch()
    task.losses(task(batch["image"]), batch)["loss"].backward()
    norm = lambda ps: sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in ps)  # noqa: E731
    return (
        norm(task.net.classification_parameters),
        norm(task.net.segmentation_parameters),
        norm(task.net.net.encoder.parameters()),
    )


def test_theta_one_trains_segmentation_only():
    cls, seg, enc = _grads(1.0)
    assert cls == 0.0 and seg > 0 and enc > 0


def test_theta_zero_trains_classification_only():
    cls, seg, enc = _grads(0.0)
    assert seg == 0.0 and cls > 0 and enc > 0


def test_joint_loss_is_the_weighted_sum():
    task = MultiTaskTask(_net(), theta=0.3)
    batch = _batch()
    losses = task.losses(task(batch["image"]), batch)
    assert torch.isclose(losses["loss"], 0.3 * losses["loss_seg"] + 0.7 * losses["loss_cls"])


def test_bad_config_values_say_what_is_allowed():
    with pytest.raises(ConfigError, match=r"theta must lie in \[0, 1\]"):
        MultiTaskTask(_net(), theta=1.5)
    with pytest.raises(ConfigError, match="unknown smp encoder 'resnet1000'"):
        UNetWithClassifier("resnet1000")
    with pytest.raises(ConfigError, match="decoder_channels"):
        UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(32, 16))


def test_num_classes_must_match_the_data():
    class FourClassData:
        num_classes = 4

    task = MultiTaskTask(_net())
    with pytest.raises(ConfigError, match="num_classes is 2 but the data module FourClassData has 4"):
        task.check_data(FourClassData())
