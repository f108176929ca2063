"""The losses in tumorlab.tasks.losses against hand computations (numpy, float64) and smp's DiceLoss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from tumorlab.tasks.losses import cross_entropy_loss, dice_bce_loss, joint_loss, soft_dice_loss, uncertainty_loss


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _bce(x: np.ndarray, t: np.ndarray) -> float:
    p = _sigmoid(x)
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


# -- segmentation: soft Dice + BCE ------------------------------------------------------------------------
def test_dice_bce_matches_a_hand_computation():
    x = np.array([2.0, -1.0, 0.5, -3.0]).reshape(2, 1, 1, 2)
    t = np.array([1.0, 0.0, 1.0, 1.0]).reshape(2, 1, 1, 2)
    p = _sigmoid(x)
    dice = 2 * (p * t).sum() / (p.sum() + t.sum())  # pooled over the whole batch, not per slice
    expected = 1 - dice + _bce(x, t)
    got = dice_bce_loss(torch.tensor(x, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_dice_bce_equals_smp_dice_loss_plus_bce():
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 16, 16) * 3
    mask = (torch.rand(4, 1, 16, 16) > 0.7).float()
    mask[1] = 0  # an empty slice inside a batch that has tumour pixels elsewhere
    smp_dice = DiceLoss(mode="binary", from_logits=True)
    expected = smp_dice(logits, mask) + F.binary_cross_entropy_with_logits(logits, mask)
    torch.testing.assert_close(dice_bce_loss(logits, mask), expected, rtol=0, atol=1e-7)
    empty = torch.zeros_like(mask)
    torch.testing.assert_close(soft_dice_loss(logits, empty), smp_dice(logits, empty), rtol=0, atol=0)


def test_a_batch_without_tumour_is_trained_by_bce_alone():
    x = np.array([0.3, -2.0, 1.5, -0.5]).reshape(1, 1, 2, 2)
    t = np.zeros_like(x)
    logits, mask = torch.tensor(x, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)
    assert float(soft_dice_loss(logits, mask)) == 0.0
    assert float(dice_bce_loss(logits, mask)) == pytest.approx(_bce(x, t), abs=1e-6)


def test_a_perfect_prediction_has_zero_loss_and_a_wrong_one_does_not():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, 1:3, 1:3] = 1
    perfect = (mask * 2 - 1) * 30.0  # logits of ±30: probabilities 1 and 0 in float32
    assert float(dice_bce_loss(perfect, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(-perfect, mask)) == pytest.approx(1.0, abs=1e-6)  # nothing right: Dice 0


# -- classification: weighted, label-smoothed cross-entropy -----------------------------------------------
def test_cross_entropy_with_weights_and_smoothing_matches_numpy():
    z = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    y = np.array([0, 2, 1, 1])
    w = np.array([1.0, 2.0, 0.5])
    eps, c = 0.1, 3
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    nll = -(w[y] * logp[np.arange(4), y]).sum() / w[y].sum()
    smooth = -(logp * w).sum() / w[y].sum()  # every class's term keeps its own weight
    expected = (1 - eps) * nll + eps / c * smooth
    got = cross_entropy_loss(torch.tensor(z), torch.tensor(y), torch.tensor(w), label_smoothing=eps)
    assert float(got) == pytest.approx(expected, abs=1e-9)
    plain = -logp[np.arange(4), y].mean()
    assert float(cross_entropy_loss(torch.tensor(z), torch.tensor(y))) == pytest.approx(plain, abs=1e-9)


# -- joining the two -------------------------------------------------------------------------------------------
def test_theta_weights_the_two_losses():
    seg = torch.tensor(0.8, requires_grad=True)
    cls = torch.tensor(2.0, requires_grad=True)
    assert joint_loss(seg, cls, 0.25).item() == pytest.approx(0.25 * 0.8 + 0.75 * 2.0)
    assert joint_loss(seg, cls, 1.0).item() == pytest.approx(0.8)
    assert joint_loss(seg, cls, 0.0).item() == pytest.approx(2.0)
    joint_loss(seg, cls, 1.0).backward()
    assert float(seg.grad) == 1.0 and float(cls.grad) == 0.0  # θ = 1: nothing reaches the classifier


def test_uncertainty_weighting_with_zero_log_variances_is_the_plain_sum():
    seg, cls, zero = torch.tensor(0.8), torch.tensor(2.0), torch.zeros(())
    loss, w_seg, w_cls = uncertainty_loss(seg, cls, zero, zero)
    assert float(loss) == pytest.approx(2.8) and float(w_seg) == 1.0 and float(w_cls) == 1.0


def test_uncertainty_weighting_matches_the_formula_and_settles_at_one_over_the_loss():
    seg, cls = torch.tensor(0.8), torch.tensor(2.0)
    s_seg, s_cls = torch.tensor(math.log(2.0)), torch.tensor(-1.0)
    loss, w_seg, w_cls = uncertainty_loss(seg, cls, s_seg, s_cls)
    assert float(loss) == pytest.approx(0.5 * 0.8 + math.e * 2.0 + math.log(2.0) - 1.0, abs=1e-6)
    assert float(w_seg) == pytest.approx(0.5) and float(w_cls) == pytest.approx(math.e)
    # d/ds [exp(-s)·L + s] = 1 - exp(-s)·L vanishes at s = log L: the weight exp(-s) becomes 1/L.
    s_seg = torch.tensor(math.log(0.8), requires_grad=True)
    s_cls = torch.tensor(math.log(2.0), requires_grad=True)
    loss, w_seg, _ = uncertainty_loss(seg, cls, s_seg, s_cls)
    loss.backward()
    assert abs(float(s_seg.grad)) < 1e-6 and abs(float(s_cls.grad)) < 1e-6
    assert float(w_seg) == pytest.approx(1 / 0.8) and not w_seg.requires_grad
