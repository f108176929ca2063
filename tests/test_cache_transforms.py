"""The decode cache (memory, disk, workers, no stale entries), joint augmentation and the brain crop."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest
import torch

import tumorlab.data.cache as cache_module
from tumorlab.data import FolderDataModule, LGGDataModule
from tumorlab.data.io import read_image
from tumorlab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DecodeSpec,
    brain_bbox,
    build_transforms,
    check_augment,
    prepare,
)
from tumorlab.errors import ConfigError, DataError

TINY = {"image_size": 32, "batch_size": 4, "num_workers": 0, "augment": {}}


def _images(dm, split: str = "val") -> torch.Tensor:
    ds = dm.datasets[split]
    return torch.stack([ds[k]["image"] for k in range(len(ds))])


def test_memory_disk_and_no_cache_serve_the_same_arrays(lgg_phantom, tmp_path):
    runs = {
        kind: LGGDataModule(str(lgg_phantom), cache=kind, cache_dir=str(tmp_path), **TINY)
        for kind in ("none", "memory", "disk")
    }
    for dm in runs.values():
        dm.setup()
    ref = _images(runs["none"])
    for kind in ("memory", "disk"):
        assert torch.equal(_images(runs[kind]), ref), kind
    masks = [torch.stack([ds[k]["mask"] for k in range(len(ds))]) for ds in (r.datasets["val"] for r in runs.values())]
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])


@pytest.mark.slow
def test_disk_cache_is_reused_and_never_stale(lgg_phantom, tmp_path, monkeypatch):
    root = shutil.copytree(lgg_phantom, tmp_path / "lgg")
    cache_dir = tmp_path / "cache"
    first = LGGDataModule(str(root), cache="disk", cache_dir=str(cache_dir), **TINY)
    first.setup()
    assert len(list(cache_dir.glob("*.json"))) == 1
    ref = _images(first)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a file was decoded although the cache holds it")

    with monkeypatch.context() as m:  # a second run decodes nothing
        m.setattr(cache_module, "decode_image", no_decoding)
        m.setattr(cache_module, "read_mask", no_decoding)
        again = LGGDataModule(str(root), cache="disk", cache_dir=str(cache_dir), **TINY)
        again.setup()
        assert torch.equal(_images(again), ref)
    # other settings are other entries
    for change in ({"image_size": 24}, {"channels": [1]}, {"brain_crop": True}):
        dm = LGGDataModule(str(root), cache="disk", cache_dir=str(cache_dir), **{**TINY, **change})
        dm.setup()
        plain = LGGDataModule(str(root), cache="none", **{**TINY, **change})
        plain.setup()
        assert torch.equal(_images(dm), _images(plain)), change
    assert len(list(cache_dir.glob("*.json"))) == 4
    # a changed file is a new entry, not the old arrays
    victim = first.datasets["val"].samples[0].image
    image = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(victim), 255 - image)
    changed = LGGDataModule(str(root), cache="disk", cache_dir=str(cache_dir), **TINY)
    changed.setup()
    assert not torch.equal(_images(changed)[0], ref[0])
    assert torch.equal(_images(changed)[1:], ref[1:])


def test_memory_cache_follows_a_changed_image_size(lgg_phantom):
    dm = LGGDataModule(str(lgg_phantom), **TINY)
    dm.setup()
    assert dm.datasets["train"][0]["image"].shape == (3, 32, 32)
    dm.image_size = 40
    dm.setup()
    assert dm.datasets["train"][0]["image"].shape == (3, 40, 40)


def test_workers_read_the_cache(folders_phantom):
    ref = FolderDataModule(str(folders_phantom), **TINY)
    ref.setup()
    expected = torch.cat([b["image"] for b in ref.val_dataloader()])
    for kind in ("memory", "disk"):
        dm = FolderDataModule(str(folders_phantom), cache=kind, **{**TINY, "num_workers": 2})
        dm.setup()
        assert dm.persistent_workers and dm.pin_memory == torch.cuda.is_available()
        assert torch.equal(torch.cat([b["image"] for b in dm.val_dataloader()]), expected), kind


def test_training_batches_depend_only_on_seed_and_epoch(lgg_phantom):
    """Same epoch: identical batches with 0 or 2 workers; next epoch: other order and other augmentations."""
    augment = {"brightness_contrast": 1.0, "affine": 1.0}

    def epoch(workers: int, e: int) -> torch.Tensor:
        dm = LGGDataModule(str(lgg_phantom), **{**TINY, "augment": augment, "num_workers": workers})
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(e)
        return torch.cat([b["image"] for b in loader])

    first = epoch(0, 0)
    assert torch.equal(first, epoch(2, 0)), "workers must not change what a sample looks like"
    assert torch.equal(first, epoch(0, 0))
    assert not torch.equal(first, epoch(0, 1))


def test_augmentation_moves_image_and_mask_together_and_only_in_training(lgg_phantom):
    dm = LGGDataModule(str(lgg_phantom), **{**TINY, "augment": {"hflip": 1.0}})
    dm.setup()
    store = dm.store
    train, val = dm.datasets["train"], dm.datasets["val"]
    k = int(np.argmax([store.load(i)[1].sum() for i in train.indices]))  # a slice with tumour
    image, mask = store.load(int(train.indices[k]))
    item = train[k]
    assert torch.equal(item["mask"][0], torch.from_numpy(mask[:, ::-1].copy()).float())
    plain = build_transforms(False, None, IMAGENET_MEAN, IMAGENET_STD)(image=image[:, ::-1].copy())["image"]
    assert torch.allclose(item["image"], plain)
    j = 0
    image, mask = store.load(int(val.indices[j]))
    assert torch.equal(val[j]["mask"][0], torch.from_numpy(mask).float())  # no augmentation at validation
    # rotations, shifts and elastic warps keep the mask on the image (mask = thresholded image here)
    blob = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(blob, (40, 24), 12, (200, 200, 200), -1)
    blob_mask = (blob[..., 0] > 100).astype(np.uint8)
    aug = build_transforms(True, {"affine": 1.0, "rotate": 1.0, "elastic": 1.0}, IMAGENET_MEAN, IMAGENET_STD)
    for _ in range(5):
        out = aug(image=blob, mask=blob_mask)
        moved = out["image"][0] > ((100 / 255 - 0.485) / 0.229)
        m = out["mask"].bool()
        iou = (moved & m).sum() / (moved | m).sum()
        assert iou > 0.85, float(iou)


def test_augment_config_is_checked():
    assert check_augment(None) == {"hflip": {"p": 0.5}}
    assert check_augment({}) == {}
    assert check_augment({"rotate": {"limit": 5}})["rotate"] == {"limit": 5.0, "p": 0.5}
    with pytest.raises(ConfigError, match=r"data.augment.zoom: unknown augmentation"):
        check_augment({"zoom": 0.5})
    with pytest.raises(ConfigError, match=r"data.augment.affine.shear: unknown parameter"):
        check_augment({"affine": {"shear": 3}})
    with pytest.raises(ConfigError, match=r"probability must lie in \[0, 1\]"):
        check_augment({"hflip": 1.5})
    with pytest.raises(ConfigError, match="data.augment"):
        LGGDataModule("/nonexistent", augment={"zoom": 1})


def test_brain_crop_finds_the_head_and_crops_image_and_mask_alike():
    image = np.zeros((100, 120, 3), np.uint8)
    cv2.ellipse(image, (70, 45), (30, 20), 0, 0, 360, (120, 120, 120), -1)  # the "head": x 40-100, y 25-65
    image[60:95, 5:15] = 0
    mask = np.zeros((100, 120), np.uint8)
    mask[40:50, 60:70] = 1
    y0, y1, x0, x1 = brain_bbox(image)
    assert abs(y0 - 25) <= 2 and abs(y1 - 66) <= 2 and abs(x0 - 40) <= 2 and abs(x1 - 101) <= 2
    cropped, cropped_mask = prepare(image, mask, DecodeSpec(x1 - x0, (0, 1, 2), True))
    assert cropped.shape == (x1 - x0, x1 - x0, 3)
    ys, xs = np.nonzero(cropped_mask)
    scale_y = (x1 - x0) / (y1 - y0)
    assert abs(ys.min() - (40 - y0) * scale_y) <= 2 and abs(xs.min() - (60 - x0)) <= 1
    assert brain_bbox(np.zeros((50, 50, 3), np.uint8)) is None  # an empty slice is left as it is
    grey, _ = prepare(image, None, DecodeSpec(32, (1,), False))
    assert grey.shape == (32, 32, 1)


def test_normalisation_comes_from_the_given_statistics(lgg_phantom):
    dm = LGGDataModule(str(lgg_phantom), channels=[1], normalize={"mean": [0.5], "std": [0.5]}, **TINY)
    assert dm.normalization == {"mean": [0.5], "std": [0.5], "source": "data.normalize"}
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    ds = dm.datasets["val"]
    prepared = np.stack([dm.store.load(int(i))[0] for i in ds.indices[: len(batch["image"])]])  # (B, S, S, 1)
    by_hand = (prepared.astype(np.float64) / 255 - 0.5) / 0.5
    assert np.allclose(batch["image"].numpy(), by_hand.transpose(0, 3, 1, 2), atol=1e-6)
    # the stored array is the FLAIR channel (1) of the file, resized
    first = prepare(read_image(ds.samples[0].image), None, DecodeSpec(32, (1,), False))[0]
    assert np.array_equal(prepared[0], first)
    # set_normalization after setup: the next setup rebuilds the datasets with the new statistics
    dm.set_normalization([0.0], [1.0], source="the network")
    dm.setup()
    assert np.allclose(dm.datasets["val"][0]["image"].numpy(), prepared[0].transpose(2, 0, 1) / 255, atol=1e-6)
    assert dm.normalization["source"] == "the network" and dm.hparams["normalize"] == {"mean": [0.0], "std": [1.0]}


def test_default_normalisation_is_imagenet_of_the_fed_channels_and_bad_statistics_fail(lgg_phantom):
    dm = LGGDataModule(str(lgg_phantom), channels=[2, 0], **TINY)
    assert dm.normalization["mean"] == [IMAGENET_MEAN[2], IMAGENET_MEAN[0]]
    assert dm.normalization["std"] == [IMAGENET_STD[2], IMAGENET_STD[0]]
    with pytest.raises(ConfigError, match=re.escape("data.channels [2, 0] has 2, got 3 means and 3 stds (from timm)")):
        dm.set_normalization(IMAGENET_MEAN, IMAGENET_STD, source="timm")
    with pytest.raises(ConfigError, match="data.normalize: std must be positive"):
        dm.set_normalization([0.1, 0.2], [0.5, 0.0])
    with pytest.raises(ConfigError, match="data.normalize must be"):
        LGGDataModule(str(lgg_phantom), normalize={"mean": [0.5, 0.5, 0.5]}, **TINY)
    with pytest.raises(ConfigError, match="data.normalize needs one mean and one std per fed channel"):
        LGGDataModule(str(lgg_phantom), channels=[1], normalize={"mean": [0.5] * 3, "std": [0.5] * 3}, **TINY)
    assert dm.normalization["source"].startswith("ImageNet")  # the failed calls changed nothing


@pytest.mark.parametrize("layout", ["folders", "lgg"])
def test_a_truncated_file_stops_setup_even_without_a_cache(layout, lgg_phantom, folders_phantom, tmp_path):
    root = shutil.copytree(lgg_phantom if layout == "lgg" else folders_phantom, tmp_path / layout)
    pattern = "*_5.tif" if layout == "lgg" else "*.jpg"
    victim = sorted(root.rglob(pattern))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a download cut off half-way
    module = LGGDataModule if layout == "lgg" else FolderDataModule
    plain = {**TINY, "cache": "none", "duplicates": "exact"}  # nothing else asks for decoding
    with pytest.raises(DataError, match=re.escape(f"{victim}: not a readable image")):
        module(str(root), **plain).setup()
    dm = module(str(root), on_bad_file="skip", **plain)
    dm.setup()
    assert [p for p, _ in dm.bad_files] == [str(victim)]
    served = {str(s.image) for ds in dm.datasets.values() for s in ds.samples}
    assert str(victim) not in served and len(served) == len(dm.samples) - 1
