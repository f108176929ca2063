"""Drawing a report, comparison or CAM figure leaves the process's matplotlib backend as it was (a notebook's
inline backend stays): the figures are drawn without pyplot."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch


@pytest.fixture
def pdf_backend():
    """A backend other than Agg for the test (as a notebook's would be), the previous one restored afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    yield "pdf"
    matplotlib.use(before)


def test_drawing_leaves_the_backend_alone(pdf_backend, tmp_path):
    from PIL import Image

    from tumorlab.evaluation.cam import CamItem, draw_overlay
    from tumorlab.evaluation.compare import _plot
    from tumorlab.evaluation.figures import plot_confusion, plot_patient_dice, plot_roc_pr, plot_slices

    rng = np.random.default_rng(0)
    y = np.array([0, 1, 0, 1, 1, 0])
    probs = np.stack([1 - (p := rng.uniform(size=6)), p], axis=1)
    mask = np.zeros((16, 16), bool)
    mask[4:9, 5:11] = True
    pngs = [
        plot_confusion([[3, 1], [0, 2]], ["no_tumour", "tumour"], tmp_path / "confusion.png"),
        plot_roc_pr(y, probs, ["no_tumour", "tumour"], tmp_path / "roc.png"),
        plot_patient_dice(
            {"a": {"dice": 0.5, "mean_slice_dice": 0.4, "mean_slice_dice_tumour": 0.3}}, tmp_path / "d.png"
        ),
        plot_slices(
            [{"title": "s", "image": rng.uniform(size=(16, 16)), "true": mask, "pred": mask}], tmp_path / "s.png"
        ),
        _plot([{"model": "CNN9", "run": "r", "data_check": "same", "test/acc": 0.5}], tmp_path / "compare.png"),
        draw_overlay(
            CamItem(torch.zeros(3, 16, 16), np.zeros((16, 16, 3), np.uint8), mask.astype(np.uint8), 1, tmp_path / "x"),
            rng.uniform(size=(16, 16)).astype(np.float32),
            "title",
            tmp_path / "cam.png",
        ),  # fmt: skip
    ]
    assert matplotlib.get_backend() == pdf_backend
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 100
