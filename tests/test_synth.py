"""The phantom generator: deterministic, in the real layouts, with class-dependent tumours."""

from __future__ import annotations

import csv
import hashlib
import re

import cv2
import numpy as np
import pytest
import tifffile

from tumorlab.synth import FOLDER_CLASSES, render_slice, sample_anatomy, sample_tumour, write_folders, write_lgg
from tumorlab.synth.layouts import LGG_CSV_HEADER


def _digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_lgg_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a, b, c = (
        write_lgg(tmp_path / n, patients=2, slices=(4, 5), size=64, seed=s) for n, s in (("a", 1), ("b", 1), ("c", 2))
    )
    assert a == b
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db
    shared = set(da) & set(dc)
    assert any(da[k] != dc[k] for k in shared if k.endswith(".tif"))


def test_lgg_prefix_stable_when_adding_patients(tmp_path):
    write_lgg(tmp_path / "small", patients=2, slices=(3, 4), size=64, seed=5)
    write_lgg(tmp_path / "large", patients=4, slices=(3, 4), size=64, seed=5)
    small, large = _digest(tmp_path / "small"), _digest(tmp_path / "large")
    assert all(large[k] == v for k, v in small.items() if k.endswith(".tif"))


def test_lgg_layout_matches_kaggle_3m(lgg_phantom):
    root = lgg_phantom / "kaggle_3m"
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(cases) == 8
    with open(root / "data.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == LGG_CSV_HEADER
    assert sorted(r[0] for r in rows[1:]) == sorted("_".join(c.name.split("_")[:3]) for c in cases)
    for case in cases:
        assert re.fullmatch(r"TCGA_[A-Z]{2}_\d{4}_\d{8}", case.name)
        images = [p for p in case.iterdir() if not p.name.endswith("_mask.tif")]
        numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in images)
        assert numbers == list(range(1, len(images) + 1))  # 1..n, not zero-padded
        for n in numbers:
            image = tifffile.imread(case / f"{case.name}_{n}.tif")
            mask = tifffile.imread(case / f"{case.name}_{n}_mask.tif")
            assert image.shape == (256, 256, 3) and image.dtype == np.uint8
            assert mask.shape == (256, 256) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}


def test_lgg_tumour_is_one_contiguous_run_of_slices_that_grows_and_shrinks(lgg_phantom):
    for case in sorted(p for p in (lgg_phantom / "kaggle_3m").iterdir() if p.is_dir()):
        n = len(list(case.glob("*_mask.tif")))
        areas = np.array([(tifffile.imread(case / f"{case.name}_{i}_mask.tif") > 0).sum() for i in range(1, n + 1)])
        present = np.flatnonzero(areas)
        assert len(present) > 0, f"{case.name}: every phantom patient has a tumour"
        assert np.all(np.diff(present) == 1), f"{case.name}: tumour slices {present} are not contiguous"
        assert len(present) < n, f"{case.name}: some slices must be tumour-free"
        if len(present) >= 3:
            assert areas[present].max() > areas[present[[0, -1]]].max(), "largest cross-section inside the run"


def test_folders_layout(folders_phantom):
    for split, count in (("Training", 4), ("Testing", 2)):
        assert sorted(p.name for p in (folders_phantom / split).iterdir()) == sorted(FOLDER_CLASSES)
        for cls, (_, prefix) in FOLDER_CLASSES.items():
            files = sorted((folders_phantom / split / cls).iterdir())
            assert [f.name for f in files] == sorted(f"{prefix} ({i})" + ".jpg" for i in range(1, count + 1))
            image = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
            assert image.shape == (96, 96, 3)


def test_folders_deterministic(tmp_path):
    write_folders(tmp_path / "a", train_per_class=2, test_per_class=1, size=64, seed=9)
    write_folders(tmp_path / "b", train_per_class=2, test_per_class=1, size=64, seed=9)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def _tumour_stats(kind: str, n: int = 24):
    """Mean distance of the tumour centroid from the image centre (px) and mean area (px), at the widest slice."""
    dist, area = [], []
    for i in range(n):
        rng = np.random.default_rng([11, i])
        anatomy, tumour = sample_anatomy(rng), sample_tumour(kind, rng)
        _, mask = render_slice(128, tumour.z_center, anatomy, tumour, rng)
        ys, xs = np.nonzero(mask)
        dist.append(np.hypot(xs.mean() - 64, ys.mean() - 64))
        area.append(len(xs))
    return np.mean(dist), np.mean(area)


def test_tumour_site_and_size_depend_on_class():
    d_glioma, a_glioma = _tumour_stats("glioma")
    d_menin, _ = _tumour_stats("meningioma")
    d_pit, a_pit = _tumour_stats("pituitary")
    assert d_menin > d_glioma, "meningiomas sit at the rim, gliomas inside a hemisphere"
    assert a_pit < 0.5 * a_glioma, "pituitary tumours are small"


def test_difficulty_raises_noise():
    def background_std(difficulty):
        rng = np.random.default_rng(0)
        image, _ = render_slice(128, 0.5, sample_anatomy(rng), None, rng, difficulty)
        return image[:6, :6].astype(float).std()

    assert background_std(0.9) > 2 * background_std(0.0)
    with pytest.raises(ValueError, match="difficulty"):
        background_std(1.5)


def test_refuses_to_overwrite(tmp_path):
    write_lgg(tmp_path, patients=1, slices=(2, 2), size=32)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_lgg(tmp_path, patients=1, slices=(2, 2), size=32)
