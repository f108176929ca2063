"""FolderDataModule: class-name normalisation, class choice, Training/Testing and test_root, duplicate groups."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tumorlab.data import FolderDataModule
from tumorlab.errors import DataError
from tumorlab.synth import write_folders

SARTAJ = ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]
MASOUD = {
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "notumor",
    "pituitary_tumor": "pituitary",
}
TINY = {"image_size": 32, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    """A 48 px 4-class download: 6 training and 3 test images per class."""
    out = tmp_path_factory.mktemp("mri4")
    write_folders(out, train_per_class=6, test_per_class=3, size=48, seed=11)
    return out


def _copy(download: Path, dst: Path, rename: dict | None = None) -> Path:
    shutil.copytree(download, dst)
    for split in ("Training", "Testing"):
        for old, new in (rename or {}).items():
            (dst / split / old).rename(dst / split / new)
    return dst


def test_both_namings_read_the_same(download, tmp_path):
    a = FolderDataModule(str(download), **TINY)
    b = FolderDataModule(str(_copy(download, tmp_path / "b", MASOUD)), **TINY)
    assert a.class_names == b.class_names == ["glioma", "meningioma", "no_tumour", "pituitary"]
    assert a.num_classes == 4 and a.in_channels == 3
    labels_a = {(s.image.parent.parent.name, s.image.name): s.label for s in a.samples}
    labels_b = {(s.image.parent.parent.name, s.image.name): s.label for s in b.samples}
    assert labels_a == labels_b and len(labels_a) == 36
    for s in a.samples:  # the label is the folder's class
        assert a.class_names[s.label] == MASOUD[s.image.parent.name].replace("notumor", "no_tumour")


def test_classes_choose_and_order_and_binary(download):
    dm = FolderDataModule(str(download), classes=["pituitary", "no_tumor"], **TINY)
    assert dm.class_names == ["pituitary", "no_tumour"]
    assert Counter(dm.class_names[s.label] for s in dm.samples) == {"pituitary": 9, "no_tumour": 9}
    passed_over = [p for p, why in dm.skipped_files if "not in data.classes" in why]
    assert len(passed_over) == 18  # glioma and meningioma, Training and Testing
    binary = FolderDataModule(str(download), binary=True, **TINY)
    assert binary.class_names == ["no_tumour", "tumour"] and binary.num_classes == 2
    assert vars(binary)["num_classes"] == 2 and vars(binary)["in_channels"] == 3  # plain attributes before setup
    assert all(s.label == int(s.image.parent.name != "no_tumor") for s in binary.samples)
    binary.setup()
    counts = binary.class_counts("train")
    assert counts[1] > counts[0] > 0
    expected = counts.sum() / (2 * counts)
    assert torch.allclose(binary.class_weights(), torch.tensor(expected / expected.mean(), dtype=torch.float32))


def test_testing_folder_is_the_test_split_and_batches_follow_the_contract(download):
    dm = FolderDataModule(str(download), **TINY)
    dm.setup("fit")
    test_paths = {str(p) for p in (download / "Testing").rglob("*.jpg")}
    assert {str(s.image) for s in dm.datasets["test"].samples} == test_paths
    assert not any("Testing" in str(s.image) for name in ("train", "val") for s in dm.datasets[name].samples)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.long and "mask" not in batch
    assert len(batch["patient"]) == 4 and all(p.startswith("group-") for p in batch["patient"])


def _near_copy(src: Path, dst: Path) -> None:
    """The same picture re-encoded: resized by 10 % and saved at a lower JPEG quality (other bytes)."""
    image = cv2.imread(str(src))
    image = cv2.resize(image, (int(image.shape[1] * 1.1), int(image.shape[0] * 1.1)), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(dst), image, [cv2.IMWRITE_JPEG_QUALITY, 75])


def test_duplicate_groups_never_straddle_splits_and_test_copies_leave_training(download, tmp_path):
    root = _copy(download, tmp_path / "dups")
    train, test = root / "Training", root / "Testing"
    glioma = sorted((train / "glioma_tumor").glob("*.jpg"))
    shutil.copy(glioma[0], train / "glioma_tumor" / "copy of gg 1.jpg")  # exact copy inside training
    _near_copy(glioma[1], train / "glioma_tumor" / "near gg 2.jpg")  # near copy inside training
    leaked = sorted((test / "pituitary_tumor").glob("*.jpg"))
    shutil.copy(leaked[0], train / "pituitary_tumor" / "leak exact.jpg")  # a test image copied into training
    _near_copy(leaked[1], train / "pituitary_tumor" / "leak near.jpg")
    for seed in range(4):
        dm = FolderDataModule(str(root), seed=seed, **TINY)
        dm.setup()
        where = {}
        for name, ds in dm.datasets.items():
            for i in ds.indices:
                assert where.setdefault(dm.duplicate_ids[i], name) == name, "a duplicate group straddles splits"
        ids = {s.image: dm.duplicate_ids[i] for i, s in enumerate(dm.samples)}
        copies = train / "glioma_tumor" / "copy of gg 1.jpg", train / "glioma_tumor" / "near gg 2.jpg"
        assert ids[copies[0]] == ids[glioma[0]] and ids[copies[1]] == ids[glioma[1]]
        assert len(set(ids.values())) == len(ids) - 4  # no other image was grouped
        dropped = sorted(Path(a).name for a, _ in dm.dropped_test_duplicates)
        assert dropped == ["leak exact.jpg", "leak near.jpg"]
        kept = {s.image.name for name in ("train", "val") for s in dm.datasets[name].samples}
        assert not kept & {"leak exact.jpg", "leak near.jpg"}
    with pytest.raises(
        DataError, match=r"2 training images have a copy in the test set: .*leak exact\.jpg = .*Testing"
    ):
        FolderDataModule(str(root), test_duplicates="raise", **TINY).setup()
    exact_only = FolderDataModule(str(root), duplicates="exact", **TINY)
    exact_only.setup()
    assert [Path(a).name for a, _ in exact_only.dropped_test_duplicates] == ["leak exact.jpg"]


def test_test_root_replaces_testing_for_cross_dataset_evaluation(download, tmp_path):
    other = tmp_path / "other"
    write_folders(other, train_per_class=2, test_per_class=2, size=40, seed=99)
    other = _copy(other, tmp_path / "other_masoud", MASOUD)
    dm = FolderDataModule(str(download), test_root=str(other), **TINY)
    dm.setup()
    assert {str(s.image) for s in dm.datasets["test"].samples} == {str(p) for p in (other / "Testing").rglob("*.jpg")}
    assert (str(download / "Testing"), "replaced by test_root") in dm.skipped_files
    assert sum(len(ds) for ds in dm.datasets.values()) == 24 + 8


def test_weighted_sampler_balances_classes(download, tmp_path):
    root = _copy(download, tmp_path / "imbalanced")
    for p in sorted((root / "Training" / "no_tumor").glob("*.jpg"))[2:]:
        p.unlink()
    dm = FolderDataModule(str(root), weighted_sampler=True, split=(0.8, 0.2, 0.0), **TINY)
    dm.setup()
    counts = dm.class_counts("train")
    assert counts[2] < counts[0]
    drawn = Counter()
    loader = dm.train_dataloader()
    for epoch in range(60):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            drawn.update(batch["label"].tolist())
    share = np.array([drawn[c] for c in range(4)]) / sum(drawn.values())
    assert np.abs(share - 0.25).max() < 0.05, share


@pytest.mark.slow  # scans and hashes the 2,870 real images (about 5 s)
def test_real_four_class_folder(real_data):
    root = real_data / "brain-tumor-classification" / "Training"
    dm = FolderDataModule(str(root), duplicates="exact", cache="none", **TINY)
    assert len(dm.samples) == 2870 and dm.class_names == ["glioma", "meningioma", "no_tumour", "pituitary"]
    assert Counter(dm.class_names[s.label] for s in dm.samples) == {
        "glioma": 826,
        "meningioma": 822,
        "no_tumour": 395,
        "pituitary": 827,
    }
    dm.setup()
    # recount the byte-identical groups with hashlib, independently of the module
    by_hash = Counter(hashlib.sha256(s.image.read_bytes()).hexdigest() for s in dm.samples)
    groups = [n for n in by_hash.values() if n > 1]
    assert (len(groups), sum(groups)) == (73, 166)
    module_groups = Counter(dm.duplicate_ids)
    assert sorted(n for n in module_groups.values() if n > 1) == sorted(groups)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
