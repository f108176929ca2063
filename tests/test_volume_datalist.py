"""BraTS-style cases described only by a datalist whose file names follow no pattern, stored as real exports are:
int16 with a scale factor, float64 labels, LPS and oblique affines, anisotropic spacing, .nii beside .nii.gz,
subjects of different shapes, paths relative to the JSON's folder and absolute."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tumorlab.data.volumes import VolumeData
from tumorlab.evaluation.volumes import predict_volumes, write_volume_masks
from tumorlab.synth.volumes import phantom_subject


def _oblique_lps(shape, spacing, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-spacing[0], -spacing[1], spacing[2]])  # x and y stored reversed
    affine[:3, 3] = [100.0, 120.0, -40.0]
    return affine


def _write_case(folder: Path, index: int, shape, spacing, suffix: str, rng) -> dict:
    s = phantom_subject(index, seed=5, shape=shape)
    affine = _oblique_lps(shape, spacing, degrees=4.0 * (index + 1))
    files = {}
    for m, key in (("flair", "FLAIR"), ("t1ce", "T1Gd"), ("t2", "T2"), ("t1", "T1")):
        img = nib.Nifti1Image((s.images[m] / 2).astype(np.int16), affine)
        img.header.set_slope_inter(2.0, 0.0)  # stored / 2, scaled back by the header
        path = folder / f"{rng.integers(10**9):09d}{suffix}"
        nib.save(img, path)
        files[key] = str(path)
    label = folder / f"{rng.integers(10**9):09d}{suffix}"
    nib.save(nib.Nifti1Image(s.label.astype(np.float64), affine), label)
    return {"subject": f"BraTS-GLI-{index:05d}-000", "image": files, "label": str(label), "truth": s}


def test_a_real_style_datalist_reads_and_maps_back(tmp_path):
    rng = np.random.default_rng(3)
    data, lists = tmp_path / "export" / "nifti", tmp_path / "lists"
    data.mkdir(parents=True)
    lists.mkdir()
    shapes = [(48, 40, 18), (40, 44, 16), (44, 44, 20), (40, 40, 18)]
    cases = [_write_case(data, i, shape, (0.9375, 0.9375, 3.0), ".nii" if i == 2 else ".nii.gz", rng)
             for i, shape in enumerate(shapes)]  # fmt: skip
    entries = []
    for i, case in enumerate(cases):
        image = dict(case["image"])
        if i % 2:  # half the paths relative to the datalist's folder
            image = {k: str(Path("..") / Path(v).relative_to(tmp_path)) for k, v in image.items()}
        entries.append({"subject": case["subject"], "image": image, "label": case["label"]})
    path = lists / "cases.json"
    path.write_text(json.dumps({"training": entries}))
    dm = VolumeData(str(path), label_map="brats2021", modalities=["flair", "t1ce", "t2"], image_size=32,
                    num_workers=0, task="segmentation", split=(0.5, 0.25, 0.25))  # fmt: skip
    dm.setup()
    assert dm.layout == "datalist" and dm.mask_channels == 3 and dm.in_channels == 3
    assert sorted(dm.grids) == sorted(c["subject"] for c in cases)
    for case, shape in zip(cases, shapes, strict=True):
        grid = dm.grid_of(case["subject"])
        assert sorted(grid.shape) == sorted(shape) and grid.source_axcodes[:2] == ("L", "P")
        np.testing.assert_allclose(sorted(grid.spacing), [0.9375, 0.9375, 3.0], atol=1e-6)
    # the truth stacked back is the phantom's label map, reoriented: voxel counts per region agree
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1)
    predictions = list(predict_volumes(net, dm, "test"))
    assert predictions
    for p in predictions:
        truth = next(c["truth"] for c in cases if c["subject"] == p.subject)
        for c, values in enumerate(([1, 2, 4], [1, 4], [4])):
            assert p.true[c].sum() == np.isin(truth.label, values).sum()
        assert p.truth_outside_served == 0
    written = write_volume_masks(predictions, dm, tmp_path / "masks")
    for p, out in zip(predictions, written, strict=True):
        source = nib.load(dm.subject(p.subject).images["flair"].path)
        np.testing.assert_allclose(nib.load(out).affine, source.affine, atol=1e-6)
        assert nib.load(out).shape == source.shape
