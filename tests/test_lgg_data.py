"""The LGG loader on phantoms and on the real kaggle_3m sample; patient-level splits."""

from __future__ import annotations

import csv
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from tumorlab.data import LGGDataModule, check_disjoint, scan_kaggle_3m, split_by_group
from tumorlab.data.io import read_mask
from tumorlab.errors import DataError


def test_scan_counts_and_numeric_order(lgg_phantom):
    slices = scan_kaggle_3m(lgg_phantom)
    files = sorted((lgg_phantom / "kaggle_3m").rglob("*_mask.tif"))
    assert len(slices) == len(files)
    assert len({s.patient for s in slices}) == 8
    for patient in {s.patient for s in slices}:
        numbers = [s.index for s in slices if s.patient == patient]
        assert numbers == sorted(numbers) and numbers[0] == 1
    # the same root reached from the folder above or from kaggle_3m itself
    assert [s.image for s in scan_kaggle_3m(lgg_phantom / "kaggle_3m")] == [s.image for s in slices]


def test_nested_copy_and_ds_store_are_not_counted(lgg_phantom, tmp_path):
    root = tmp_path / "lgg-mri-segmentation"
    shutil.copytree(lgg_phantom / "kaggle_3m", root / "kaggle_3m")
    shutil.copytree(lgg_phantom / "kaggle_3m", root / "lgg-mri-segmentation" / "kaggle_3m")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    case = next(p for p in (root / "kaggle_3m").iterdir() if p.is_dir())
    (case / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    slices = scan_kaggle_3m(root)
    assert len(slices) == len(scan_kaggle_3m(lgg_phantom))
    assert all("lgg-mri-segmentation/lgg-mri-segmentation" not in str(s.image) for s in slices)


def test_bad_roots_name_the_path(tmp_path, lgg_phantom):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'} does not exist"):
        scan_kaggle_3m(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no LGG slices"):
        scan_kaggle_3m(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(lgg_phantom / "kaggle_3m", broken)
    mask = next(broken.rglob("*_3_mask.tif"))
    mask.unlink()
    with pytest.raises(DataError, match="slice without its mask"):
        scan_kaggle_3m(broken)


def test_split_by_patient_is_disjoint_complete_and_deterministic():
    groups = np.repeat([f"P{i:02d}" for i in range(20)], 7)
    a = split_by_group(groups, seed=3)
    b = split_by_group(groups, seed=3)
    c = split_by_group(groups, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert sorted(np.concatenate(list(a.values()))) == list(range(len(groups)))
    patients = {k: set(groups[v]) for k, v in a.items()}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    assert [len(patients[k]) for k in ("train", "val", "test")] == [14, 3, 3]


def test_leak_check_and_too_few_patients():
    groups = np.array(["A", "A", "B", "C"])
    with pytest.raises(DataError, match="patient leakage.*A"):
        check_disjoint({"train": np.array([0, 2]), "test": np.array([1, 3])}, groups)
    with pytest.raises(DataError, match="at least 3 patients"):
        split_by_group(["A", "A", "B"])
    with pytest.raises(DataError, match="sum"):
        split_by_group(groups, fractions=(0.5, 0.3, 0.3))


def test_datamodule_batches(lgg_phantom):
    dm = LGGDataModule(str(lgg_phantom), image_size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert set(dm.split_patients("train")).isdisjoint(dm.split_patients("test"))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 32, 32)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    # the label is derived from the full-size mask
    ds = dm.datasets["test"]
    for i in range(len(ds)):
        assert int(ds[i]["label"]) == int(read_mask(ds.slices[i].mask).any())


@pytest.mark.slow  # reads the 1,229 real slices (about 4 s)
def test_real_lgg_sample(real_data):
    root = real_data / "lgg-mri-segmentation"
    slices = scan_kaggle_3m(root)
    patients = sorted({s.patient for s in slices})
    # the shared sample: 36 patients, 1,229 slices, 462 with tumour (../shared/data/README.md)
    assert len(patients) == 36
    assert len(slices) == 1229
    assert sum(int(read_mask(s.mask).any()) for s in slices) == 462
    sites = Counter(p.split("_")[1] for p in patients)  # TCGA_<institution>_<patient>
    assert sites == {"CS": 6, "DU": 14, "EZ": 1, "FG": 5, "HT": 10}
    # numeric, not textual, slice order; patient ids are the keys of data.csv
    first = [s.index for s in slices if s.patient == patients[0]]
    assert first == list(range(1, len(first) + 1))
    with open(root / "kaggle_3m" / "data.csv") as f:
        assert sorted(row["Patient"] for row in csv.DictReader(f)) == patients
    dm = LGGDataModule(str(root), image_size=64, batch_size=8, num_workers=0)
    dm.setup("fit")
    sizes = {k: len(dm.split_patients(k)) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 36 and min(sizes.values()) >= 3
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64)


def test_tasks_decide_whether_batches_carry_masks(lgg_phantom):
    for task, has_mask in (("segmentation", True), ("classification", False), ("multitask", True)):
        dm = LGGDataModule(str(lgg_phantom), task=task, image_size=32, batch_size=4, num_workers=0)
        assert dm.num_classes == 2 and dm.class_names == ["no_tumour", "tumour"] and dm.in_channels == 3
        # plain instance attributes right after __init__ (the CLI links them into the model)
        assert {k: vars(dm)[k] for k in ("num_classes", "class_names", "in_channels", "image_size")} == {
            "num_classes": 2,
            "class_names": ["no_tumour", "tumour"],
            "in_channels": 3,
            "image_size": 32,
        }
        dm.setup()
        batch = next(iter(dm.val_dataloader()))
        assert ("mask" in batch) == has_mask and batch["label"].dtype == torch.long
    flair = LGGDataModule(str(lgg_phantom), channels=[1], image_size=32, num_workers=0)
    assert flair.in_channels == 1
    flair.setup()
    assert flair.datasets["train"][0]["image"].shape == (1, 32, 32)


def test_edge_slices_metadata_and_class_weights(lgg_phantom):
    full = LGGDataModule(str(lgg_phantom), image_size=32, num_workers=0)
    trimmed = LGGDataModule(str(lgg_phantom), drop_edge_slices=True, image_size=32, num_workers=0)
    assert len(trimmed.samples) == len(full.samples) - 2 * len(full.patients)
    first_last = {(s.patient, s.index) for s in full.slices} - {(s.patient, s.index) for s in trimmed.slices}
    for patient in full.patients:
        numbers = [s.index for s in full.slices if s.patient == patient]
        assert {(patient, min(numbers)), (patient, max(numbers))} <= first_last
    assert sorted(full.metadata) == full.patients and "age_at_initial_pathologic" in full.metadata[full.patients[0]]
    full.setup()
    labels = np.array([int(read_mask(s.mask).any()) for s in full.datasets["train"].slices])
    counts = np.bincount(labels, minlength=2)
    expected = counts.sum() / (2 * counts)
    assert torch.allclose(full.class_weights(), torch.tensor(expected / expected.mean(), dtype=torch.float32))
    assert float(full.class_weights().mean()) == pytest.approx(1.0)


def test_kfold_by_patient_partitions_the_non_test_patients(lgg_phantom):
    folds = []
    for fold in range(3):
        dm = LGGDataModule(str(lgg_phantom), num_folds=3, fold=fold, image_size=32, num_workers=0)
        dm.setup()
        folds.append({k: set(dm.split_patients(k)) for k in ("train", "val", "test")})
    assert folds[0]["test"] == folds[1]["test"] == folds[2]["test"]
    vals = [f["val"] for f in folds]
    assert sum(map(len, vals)) == len(set().union(*vals)) == 8 - len(folds[0]["test"])
    for f in folds:
        assert f["train"] == set(dm.patients) - f["val"] - f["test"]


def test_real_lgg_folds_are_stratified_by_tumour_burden(real_data):
    root = real_data / "lgg-mri-segmentation"
    dm = LGGDataModule(str(root), num_folds=3, image_size=32, cache="none", num_workers=0)
    dm.setup()
    assert int(dm.labels.sum()) == 462 and len(dm.metadata) == 36
    strata = dm.strata(dm.labels, dm.keep)
    assert set(strata.tolist()) == {0, 1, 2}  # 36 patients: tertiles of the burden
    per_patient = {s.patient: int(b) for s, b in zip(dm.samples, strata, strict=True)}
    assert sorted(Counter(per_patient.values()).values()) == [12, 12, 12]
    for name in ("train", "val", "test"):
        bins = [per_patient[p] for p in dm.split_patients(name)]
        assert len(bins) >= 3 and set(bins) == {0, 1, 2}, (name, bins)  # every tertile in every split
