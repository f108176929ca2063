"""Bad input: each case gives one clear error naming the file and the cause, or is skipped and counted."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from tests.conftest import REPO
from tumorlab.data import FolderDataModule, LGGDataModule
from tumorlab.data.io import read_image
from tumorlab.errors import DataError
from tumorlab.synth import write_folders, write_lgg

TINY = {"image_size": 32, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_folders")
    write_folders(out, train_per_class=4, test_per_class=0, size=48, seed=5)
    return out / "Training"


@pytest.fixture(scope="module")
def lgg(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_lgg")
    write_lgg(out, patients=4, slices=(4, 5), size=48, seed=2)
    return out


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path: Path) -> None:  # the header survives, the data is noise
    data = bytearray(path.read_bytes())
    data[20:] = np.random.default_rng(0).integers(0, 256, len(data) - 20, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


BAD_FILES = {
    "truncated": (_truncated, "not a readable image"),
    "corrupt": (_corrupt, "not a readable image"),
    "zero-byte": (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
    "not an image": (lambda p: p.write_text("patient,label\nP1,glioma\n"), "not a readable image"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_image_file_names_the_file_and_the_cause(folders, tmp_path, case):
    root = shutil.copytree(folders, tmp_path / "root")
    victim = sorted((root / "meningioma_tumor").glob("*.jpg"))[1]
    make, cause = BAD_FILES[case]
    make(victim)
    dm = FolderDataModule(str(root), **TINY)
    with pytest.raises(DataError, match=re.escape(f"{victim}: ") + cause):
        dm.setup()


def test_skip_counts_reports_and_leaves_out_bad_files(folders, tmp_path, caplog, cli):
    root = shutil.copytree(folders, tmp_path / "root")
    victims = [sorted((root / c).glob("*.jpg"))[0] for c in ("glioma_tumor", "no_tumor", "pituitary_tumor")]
    for (make, _), victim in zip(list(BAD_FILES.values())[:3], victims, strict=True):
        make(victim)
    with caplog.at_level(logging.WARNING):
        dm = FolderDataModule(str(root), on_bad_file="skip", **TINY)
        dm.setup()
    assert sorted(p for p, _ in dm.bad_files) == sorted(str(v) for v in victims)
    assert "skipped 3 bad files" in caplog.text
    served = {str(s.image) for ds in dm.datasets.values() for s in ds.samples}
    assert len(served) == 16 - 3 and not served & {str(v) for v in victims}
    # the audit keeps them
    r = cli("audit", str(root), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["files"]["unreadable"] == 3
    assert sorted(e["path"] for e in report["unreadable_files"]) == sorted(str(v) for v in victims)


def test_class_folder_problems(folders, tmp_path):
    root = shutil.copytree(folders, tmp_path / "root")
    (root / "astrocytoma").mkdir()
    shutil.copy(next((root / "glioma_tumor").glob("*.jpg")), root / "astrocytoma" / "a.jpg")
    with pytest.raises(DataError, match=re.escape(f"{root / 'astrocytoma'}: unknown class folder 'astrocytoma'")):
        FolderDataModule(str(root), **TINY)
    ok = FolderDataModule(str(root), classes=["glioma", "astrocytoma"], **TINY)  # named, it is a class of its own
    assert ok.class_names == ["glioma", "astrocytoma"]
    shutil.rmtree(root / "astrocytoma")
    for p in (root / "no_tumor").iterdir():
        p.unlink()
    (root / "no_tumor" / "notes.txt").write_text("to do")
    with pytest.raises(DataError, match=f"{root / 'no_tumor'}: class folder 'no_tumor' holds no images"):
        FolderDataModule(str(root), **TINY)


def test_root_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("nothing here")
    with pytest.raises(DataError, match=f"data root {tmp_path / 'empty'} holds no images"):
        FolderDataModule(str(tmp_path / "empty"), **TINY)
    with pytest.raises(DataError, match=f"data root {tmp_path / 'missing'} does not exist"):
        FolderDataModule(str(tmp_path / "missing"), **TINY)


def test_non_image_and_hidden_files_are_passed_over_and_listed(folders, tmp_path):
    root = shutil.copytree(folders, tmp_path / "root")
    (root / "glioma_tumor" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    dm = FolderDataModule(str(root), **TINY)
    assert len(dm.samples) == 16
    reasons = dict(dm.skipped_files)
    assert reasons[str(root / "glioma_tumor" / "Thumbs.db")] == "not an image file (.db)"
    assert reasons[str(root / ".DS_Store")] == "hidden"


def test_lgg_slice_without_its_mask(lgg, tmp_path):
    root = shutil.copytree(lgg, tmp_path / "lgg")
    mask = sorted(root.rglob("*_2_mask.tif"))[0]
    image = mask.with_name(mask.name.replace("_mask", ""))
    mask.unlink()
    with pytest.raises(DataError, match=f"{image}: slice without its mask"):
        LGGDataModule(str(root), **TINY)
    dm = LGGDataModule(str(root), on_bad_file="skip", **TINY)
    assert dm.skipped_files == [
        (str(image), f"{image}: slice without its mask (expected {image.stem}_mask.tif beside it)")
    ]
    assert len(dm.samples) == len(list(root.rglob("*_mask.tif")))


def test_lgg_mask_of_another_size(lgg, tmp_path):
    root = shutil.copytree(lgg, tmp_path / "lgg")
    mask = sorted(root.rglob("*_3_mask.tif"))[0]
    tifffile.imwrite(mask, np.zeros((40, 40), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match=rf"{mask}: mask size 40x40 differs from its image .*_3\.tif \(48x48\)"):
        LGGDataModule(str(root), **TINY).setup()


@pytest.mark.slow
def test_bad_slice_through_the_cli_is_one_line(lgg, tmp_path, cli):
    root = shutil.copytree(lgg, tmp_path / "lgg")
    victim = sorted(root.rglob("*_2.tif"))[0]
    _truncated(victim)
    r = cli(
        "fit",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(root),
        "--data.image_size",
        "32",
        "--trainer.max_epochs",
        "1",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("tumorlab: error:")]
    assert errors == [f"tumorlab: error: {victim}: not a readable image (corrupt, truncated or not an image)"]
    assert "Traceback" not in r.stderr


def test_grey_rgba_and_16_bit_images_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    rgba = np.dstack([grey, grey // 2, grey // 3, np.full_like(grey, 128)])  # BGRA as OpenCV writes it
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    deep = (grey.astype(np.uint16) * 257)[..., None]
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    tifffile.imwrite(tmp_path / "deep.tif", (grey.astype(np.uint16) * 4))  # 10-bit values in 16 bits
    for name in ("grey.png", "rgba.png", "deep.png", "deep.tif"):
        out = read_image(tmp_path / name)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8, name
    assert np.array_equal(read_image(tmp_path / "grey.png")[..., 1], grey)
    rgb = read_image(tmp_path / "rgba.png")
    assert np.array_equal(rgb[..., 0], grey // 3) and np.array_equal(rgb[..., 2], grey)  # BGR(A) -> RGB
    expected = np.round(grey.astype(np.float32) * 4 * 255 / (int(grey.max()) * 4)).astype(np.uint8)
    assert np.abs(read_image(tmp_path / "deep.tif")[..., 0].astype(int) - expected).max() <= 1
    # and through a DataModule: a folder of such files loads
    for cls in ("glioma", "no_tumour"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for name in ("grey.png", "rgba.png", "deep.png", "deep.tif"):
            shutil.copy(tmp_path / name, tmp_path / "set" / cls / name)
    dm = FolderDataModule(str(tmp_path / "set"), duplicates="none", split=(0.5, 0.25, 0.25), **TINY)
    dm.setup()
    assert {dm.infos[i].mode for i in range(len(dm.samples))} == {"grey 8-bit", "RGBA 8-bit", "grey 16-bit"}
    assert next(iter(dm.train_dataloader()))["image"].shape[1:] == (3, 32, 32)
