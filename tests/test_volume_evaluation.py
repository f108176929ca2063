"""3D evaluation: slices stacked back per subject, Dice against NumPy, HD95 against the analytic shift, predicted
NIfTI masks in the input's geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from tumorlab.data.volumes import VolumeData
from tumorlab.data.volumes.labels import LABEL_MAPS
from tumorlab.evaluation.volumes import (
    dice_3d,
    hd95_mm,
    labels_from_channels,
    predict_volumes,
    summarise,
    volume_scores,
    write_volume_masks,
)
from tumorlab.synth.volumes import phantom_subject, write_volumes


class Oracle(nn.Module):
    """Reads the true mask back from the FLAIR channel, where the test hides it: a known prediction."""

    def forward(self, x):
        return (x[:, :3] > 0).float() * 20 - 10


def _shifted_spheres(radius_mm: float, shift_mm: float, spacing: tuple[float, float, float], n=(48, 48, 32)):
    grid = np.stack(np.meshgrid(*[np.arange(k) * s for k, s in zip(n, spacing, strict=True)], indexing="ij"), -1)
    centre = np.array([k * s / 2 for k, s in zip(n, spacing, strict=True)])
    a = np.linalg.norm(grid - centre, axis=-1) <= radius_mm
    b = np.linalg.norm(grid - centre - np.array([0, 0, shift_mm]), axis=-1) <= radius_mm
    return a, b


def _analytic_hd95(radius: float, shift: float) -> float:
    """Sphere A's surface points, uniform in cos(theta) about the shift, lie |sqrt(R² − 2Rs·u + s²) − R| from B."""
    u = np.linspace(-1, 1, 200001)
    return float(np.percentile(np.abs(np.sqrt(radius**2 - 2 * radius * shift * u + shift**2) - radius), 95))


def test_hd95_of_two_shifted_spheres_matches_the_analytic_shift():
    spacing = (1.0, 1.0, 2.0)
    a, b = _shifted_spheres(radius_mm=14.0, shift_mm=8.0, spacing=spacing)
    expected = _analytic_hd95(14.0, 8.0)  # 7.6 mm: a little less than the 8 mm shift (MONAI: 8.0 on this grid)
    got = hd95_mm(a, b, spacing)
    assert got == pytest.approx(expected, abs=1.0)  # within the 1-2 mm voxels
    # in voxels along z, without the spacing, it would be half of it: the spacing is used
    assert hd95_mm(a, b, (1.0, 1.0, 1.0)) < 0.6 * expected
    assert hd95_mm(a, a, spacing) == 0.0
    assert hd95_mm(a, np.zeros_like(a), spacing) is None


def test_3d_dice_equals_numpy_on_the_stacked_arrays(tmp_path):
    root = write_volumes(tmp_path / "brats", "brats", subjects=3)["root"]
    dm = VolumeData(root, image_size=32, num_workers=0, slices="brain", split=(0.34, 0.33, 0.33))
    dm.setup()
    torch.manual_seed(0)
    net = nn.Conv2d(3 + 1, 3, 3, padding=1)  # any network: a random one predicts something
    (prediction,) = list(predict_volumes(net, dm, "test"))
    subject = phantom_subject(int(prediction.subject[-3:]) - 1)
    truth = np.stack([np.isin(subject.label, v) for v in LABEL_MAPS["brats2021"].values()])
    np.testing.assert_array_equal(prediction.true, truth)
    rows = volume_scores(prediction, dm.region_names)
    for c, row in enumerate(rows):
        p, t = prediction.pred[c], truth[c]
        assert row["dice"] == pytest.approx(2 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
        assert row["true_voxels"] == t.sum() and row["pred_voxels"] == p.sum()
    assert prediction.truth_outside_served == 0  # no tumour in slices without brain


def test_a_perfect_prediction_stacks_back_to_the_truth(tmp_path):
    """The data module serves FLAIR = the whole-tumour mask here, so an oracle's stacked prediction is exact:
    resizing back, slice orientation and placement along the axis are right, for RAS and LPS files."""
    for orientation in ("RAS", "LPS"):
        root = tmp_path / orientation
        write_volumes(root, "brats", subjects=3, orientation=orientation)
        for seg in root.rglob("*_seg.nii.gz"):  # FLAIR, T1, T1ce hold the three regions, scaled
            img = nib.load(seg)
            label = np.asarray(img.dataobj)
            for name, values in zip(("flair", "t1", "t1ce"), LABEL_MAPS["brats2021"].values(), strict=True):
                vol = np.isin(label, values).astype(np.float32) * 100 + 1
                nib.save(nib.Nifti1Image(vol, img.affine), str(seg).replace("_seg", f"_{name}"))
        dm = VolumeData(str(root), image_size=32, num_workers=0, slices="all", intensity="none", value_range=(0, 100))
        dm.setup()
        predictions = list(predict_volumes(Oracle(), dm, "test"))
        rows = [r for p in predictions for r in volume_scores(p, dm.region_names)]
        assert all(r["dice"] == 1.0 for r in rows), rows
        assert all(r["hd95_mm"] in (0.0, None) for r in rows)
        assert set(summarise(rows)) == {"whole_tumour", "tumour_core", "enhancing"}
        paths = write_volume_masks(predictions, dm, tmp_path / f"masks_{orientation}")
        for p, path in zip(predictions, paths, strict=True):
            source = nib.load(dm.subject(p.subject).images["flair"].path)
            written = nib.load(path)
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
            assert written.shape == source.shape and written.get_data_dtype() == np.uint8
            seg = nib.load(dm.subject(p.subject).label.path)
            np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(seg.dataobj))


def test_labels_from_channels_inverts_each_map():
    for name, values in (("brats2021", [0, 1, 2, 4]), ("brats2023", [0, 1, 2, 3]), ("decathlon", [0, 1, 2, 3])):
        label_map = LABEL_MAPS[name]
        labels = np.array(values)
        channels = np.stack([np.isin(labels, v) for v in label_map.values()])
        np.testing.assert_array_equal(labels_from_channels(channels, label_map), labels)


def test_dice_3d_conventions():
    empty = np.zeros((4, 4, 4), bool)
    full = np.ones((4, 4, 4), bool)
    assert dice_3d(empty, empty) == 1.0 and dice_3d(full, empty) == 0.0 and dice_3d(full, full) == 1.0
