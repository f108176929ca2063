"""Rows of the matrix about input files: images, masks, class folders, splits and manifests."""

from __future__ import annotations

import csv
import io
import logging
import shutil

import cv2
import numpy as np
import tifffile
from PIL import Image

from tests.reliability.builders import (
    audit,
    class_folders,
    fit_args,
    folder_data,
    lgg_data,
    lgg_root,
    manifest_data,
    one_error,
    picture,
    succeeded,
    truncate,
    write_picture,
)
from tests.reliability.registry import Ctx, row
from tumorlab.data.io import read_image

UNREADABLE = "not a readable image (corrupt, truncated or not an image)"


def _fit_folders(ctx: Ctx, root, *extra: str):
    return ctx.cli(*fit_args(ctx.tmp_path, folder_data(root, *extra)), cwd=ctx.tmp_path)


# --- images ------------------------------------------------------------------------------------------------


@row("truncated-jpeg")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data", suffix=".jpg")
    victim = truncate(root / "glioma" / "img1.jpg")
    assert one_error(_fit_folders(ctx, root)) == f"{victim}: {UNREADABLE}"


@row("truncated-png")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    victim = truncate(root / "no_tumour" / "img2.png")
    assert one_error(_fit_folders(ctx, root)) == f"{victim}: {UNREADABLE}"


@row("truncated-jpeg-skip")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data", per_class=5, suffix=".jpg")
    victim = truncate(root / "glioma" / "img1.jpg")
    with ctx.caplog.at_level(logging.WARNING):
        succeeded(_fit_folders(ctx, root, "--data.on_bad_file", "skip"))
    assert f"skipped 1 bad files (on_bad_file: skip); first: {victim}: {UNREADABLE}" in ctx.caplog.text
    report = audit(ctx.cli, root)  # the audit lists what the skip left out
    assert report["files"]["unreadable"] == 1 and report["unreadable_files"][0]["path"] == str(victim)


@row("zero-byte")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data", suffix=".jpg")
    victim = root / "glioma" / "img0.jpg"
    victim.write_bytes(b"")
    assert one_error(_fit_folders(ctx, root)) == f"{victim}: empty file (0 bytes)"


@row("text-as-jpg")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data", suffix=".jpg")
    victim = root / "no_tumour" / "img3.jpg"
    victim.write_text("patient,label\nP1,glioma\n")
    assert one_error(_fit_folders(ctx, root)) == f"{victim}: {UNREADABLE}"


@row("png-named-jpg")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data", suffix=".jpg")
    victim = root / "glioma" / "img0.jpg"
    victim.write_bytes(cv2.imencode(".png", cv2.cvtColor(picture(7), cv2.COLOR_RGB2BGR))[1].tobytes())
    succeeded(_fit_folders(ctx, root))
    assert np.array_equal(read_image(victim), picture(7))  # lossless: the PNG's pixels, not a JPEG's


@row("png-alpha")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    victim = root / "glioma" / "img0.png"
    rgb = picture(8)
    cv2.imwrite(str(victim), np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full(rgb.shape[:2], 90, np.uint8)]))
    succeeded(_fit_folders(ctx, root))
    assert audit(ctx.cli, root)["modes"]["RGBA 8-bit"] == 1
    assert np.array_equal(read_image(victim), rgb)  # alpha dropped, not blended


@row("tiff-16bit")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    victim = root / "no_tumour" / "img9.tif"
    grey = picture(9)[..., 0].astype(np.uint16) * 200  # values up to ~51000
    tifffile.imwrite(victim, grey)
    succeeded(_fit_folders(ctx, root))
    assert audit(ctx.cli, root)["modes"]["grey 16-bit"] == 1
    expected = np.round(grey * (255 / grey.max())).astype(np.uint8)
    assert np.abs(read_image(victim)[..., 0].astype(int) - expected).max() <= 1


@row("float-tiff-nan")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    victim = root / "glioma" / "img9.tif"
    values = picture(10)[..., 0].astype(np.float32)
    values[3, 4] = np.nan
    tifffile.imwrite(victim, values)
    assert one_error(_fit_folders(ctx, root)) == f"{victim}: holds NaN or Inf pixel values (grey 32-bit float32)"


@row("one-pixel")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    victim = root / "glioma" / "img1.png"
    cv2.imwrite(str(victim), np.full((1, 1, 3), 128, np.uint8))
    assert one_error(_fit_folders(ctx, root)) == f"{victim}: image is 1x1 pixels; expected at least 8x8"


@row("cmyk-jpeg")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data", suffix=".jpg")
    victim = root / "glioma" / "img0.jpg"
    buffer = io.BytesIO()
    Image.fromarray(picture(11)).convert("CMYK").save(buffer, "JPEG", quality=95)
    victim.write_bytes(buffer.getvalue())
    assert Image.open(victim).mode == "CMYK"
    succeeded(_fit_folders(ctx, root))
    error = np.abs(read_image(victim).astype(int) - picture(11).astype(int)).mean(axis=(0, 1))
    assert (error < 12).all(), f"colours changed by {error} (CMYK read as something else?)"


@row("predict-images-bad-files")
def _(ctx: Ctx) -> None:
    run_dir = ctx.fixture("run_cnn9")
    files = ctx.tmp_path / "in"
    good = write_picture(files / "good.png", seed=1)
    cut = truncate(write_picture(files / "cut.png", seed=2))
    (files / "empty.png").write_bytes(b"")
    cv2.imwrite(str(files / "dot.png"), np.zeros((1, 1), np.uint8))
    out = ctx.tmp_path / "out"
    succeeded(ctx.cli("predict-images", str(files), "--ckpt_path", str(run_dir), "--out", str(out)))
    rows = {r["file"]: r for r in csv.DictReader(open(out / "predictions.csv"))}
    assert rows[str(good)]["error"] == "" and rows[str(good)]["predicted_class"] in ("glioma", "no_tumour")
    assert rows[str(cut)]["error"].startswith(f"{cut}: not a readable image")
    assert rows[str(files / "empty.png")]["error"].startswith(f"{files / 'empty.png'}: not a readable image (empty")
    assert rows[str(files / "dot.png")]["error"] == f"{files / 'dot.png'}: image is 1x1 pixels; expected at least 8x8"


# --- masks (LGG) ---------------------------------------------------------------------------------------------


def _fit_lgg(ctx: Ctx, root, *extra: str):
    return ctx.cli(*fit_args(ctx.tmp_path, lgg_data(root, *extra)), cwd=ctx.tmp_path)


def _tumour_mask(root):
    return next(p for p in sorted(root.rglob("*_mask.tif")) if tifffile.imread(p).any())


@row("mask-0-1")
def _(ctx: Ctx) -> None:
    root = lgg_root(ctx.tmp_path, ctx.fixture("lgg_small"))
    before = audit(ctx.cli, root)
    for mask in root.rglob("*_mask.tif"):
        tifffile.imwrite(mask, (tifffile.imread(mask) > 0).astype(np.uint8), photometric="minisblack")
    after = audit(ctx.cli, root)
    assert after["masks"] == before["masks"] and after["classes"] == before["classes"]
    assert before["masks"]["slices"] > before["masks"]["empty"] > 0  # both classes are there to compare
    succeeded(_fit_lgg(ctx, root))


@row("mask-third-value")
def _(ctx: Ctx) -> None:
    root = lgg_root(ctx.tmp_path, ctx.fixture("lgg_small"))
    mask = _tumour_mask(root)
    values = tifffile.imread(mask)
    values[:2, :2] = 128
    tifffile.imwrite(mask, values, photometric="minisblack")
    assert one_error(_fit_lgg(ctx, root)).startswith(
        f"{mask}: mask holds 3 values (0, 128, 255); expected 0 for background and one value (1 or 255) for tumour"
    )


@row("mask-other-size")
def _(ctx: Ctx) -> None:
    root = lgg_root(ctx.tmp_path, ctx.fixture("lgg_small"))
    mask = sorted(root.rglob("*_3_mask.tif"))[0]
    tifffile.imwrite(mask, np.zeros((40, 40), np.uint8), photometric="minisblack")
    image = mask.with_name(mask.name.replace("_mask", ""))
    assert one_error(_fit_lgg(ctx, root)).startswith(
        f"{mask}: mask size 40x40 differs from its image {image.name} (48x48)"
    )


@row("slice-without-mask")
def _(ctx: Ctx) -> None:
    root = lgg_root(ctx.tmp_path, ctx.fixture("lgg_small"))
    mask = sorted(root.rglob("*_2_mask.tif"))[0]
    mask.unlink()
    image = mask.with_name(mask.name.replace("_mask", ""))
    expected = f"{image}: slice without its mask (expected {image.stem}_mask.tif beside it)"
    assert one_error(_fit_lgg(ctx, root)) == expected


@row("slice-without-mask-skip")
def _(ctx: Ctx) -> None:
    root = lgg_root(ctx.tmp_path, ctx.fixture("lgg_small"))
    mask = sorted(root.rglob("*_2_mask.tif"))[0]
    mask.unlink()
    image = mask.with_name(mask.name.replace("_mask", ""))
    with ctx.caplog.at_level(logging.WARNING):
        succeeded(_fit_lgg(ctx, root, "--data.on_bad_file", "skip"))
    assert f"skipped 1 unpaired LGG files (on_bad_file: skip); first: {image}: slice without its mask" in (
        ctx.caplog.text
    )


@row("mask-without-slice")
def _(ctx: Ctx) -> None:
    root = lgg_root(ctx.tmp_path, ctx.fixture("lgg_small"))
    mask = sorted(root.rglob("*_2_mask.tif"))[0]
    mask.with_name(mask.name.replace("_mask", "")).unlink()
    assert one_error(_fit_lgg(ctx, root)) == f"{mask}: mask without its slice"


# --- folders, splits and manifests ---------------------------------------------------------------------------


@row("unknown-class-folder")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    write_picture(root / "astrocytoma" / "a.png", seed=50)
    assert one_error(_fit_folders(ctx, root)).startswith(
        f"{root / 'astrocytoma'}: unknown class folder 'astrocytoma'; expected one folder of images per class"
    )


@row("empty-class-folder")
def _(ctx: Ctx) -> None:
    root = class_folders(ctx.tmp_path / "data")
    shutil.rmtree(root / "no_tumour")
    (root / "no_tumour").mkdir()
    assert one_error(_fit_folders(ctx, root)).startswith(
        f"{root / 'no_tumour'}: class folder 'no_tumour' holds no images"
    )


@row("root-without-images")
def _(ctx: Ctx) -> None:
    root = ctx.tmp_path / "data"
    root.mkdir()
    (root / "README.md").write_text("the images come later")
    assert one_error(_fit_folders(ctx, root)).startswith(f"data root {root} holds no images")
    assert not (ctx.tmp_path / "runs").exists()


@row("spaces-and-non-ascii")
def _(ctx: Ctx) -> None:
    root = ctx.tmp_path / "Daten ü" / "Studie Nr 1"
    for c, name in enumerate(("Glioma", "No Tumor")):
        for k in range(4):
            write_picture(root / name / f"bild é {k}.png", seed=10 * c + k)
    succeeded(_fit_folders(ctx, root))
    assert audit(ctx.cli, root)["files"] == {"images": 8, "readable": 8, "unreadable": 0, "skipped": 0}


def _manifest(ctx: Ctx, header: str, rows: list[str]):
    class_folders(ctx.tmp_path / "data")
    csv_path = ctx.tmp_path / "data" / "manifest.csv"
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    return csv_path


def _rows(splits: bool) -> list[str]:
    out = []
    for c, name in enumerate(("glioma", "no_tumour")):
        for k in range(4):
            split = "," + ("train" if c == 0 else ("val", "test")[k % 2]) if splits else ""
            out.append(f"{name}/img{k}.png,{name},P{c}{k}{split}")
    return out


@row("train-split-one-class")
def _(ctx: Ctx) -> None:
    csv_path = _manifest(ctx, "path,label,patient,split", _rows(splits=True))
    assert one_error(ctx.cli(*fit_args(ctx.tmp_path, manifest_data(csv_path)))).startswith(
        f"{csv_path}: the train split holds class 'glioma' only (4 samples, none of no_tumour)"
    )


@row("manifest-missing-column")
def _(ctx: Ctx) -> None:
    csv_path = _manifest(ctx, "path,label", [",".join(r.split(",")[:2]) for r in _rows(splits=False)])
    assert one_error(ctx.cli(*fit_args(ctx.tmp_path, manifest_data(csv_path)))) == (
        f"{csv_path}: missing column 'patient' (found: path, label); expected path,label,patient[,mask][,split]"
    )


@row("manifest-missing-file")
def _(ctx: Ctx) -> None:
    rows = _rows(splits=False)
    rows[1] = rows[1].replace("img1.png", "gone.png")
    csv_path = _manifest(ctx, "path,label,patient", rows)
    gone = csv_path.parent / "glioma" / "gone.png"
    assert one_error(ctx.cli(*fit_args(ctx.tmp_path, manifest_data(csv_path)))) == (
        f"{csv_path}, line 3, column 'path': file {gone} does not exist"
    )


@row("manifest-missing-file-skip")
def _(ctx: Ctx) -> None:
    rows = _rows(splits=False)
    rows[1] = rows[1].replace("img1.png", "gone.png")
    csv_path = _manifest(ctx, "path,label,patient", rows)
    with ctx.caplog.at_level(logging.WARNING):
        succeeded(ctx.cli(*fit_args(ctx.tmp_path, manifest_data(csv_path, "--data.on_bad_file", "skip"))))
    assert "skipped 1 manifest rows with missing files (on_bad_file: skip); first: " in ctx.caplog.text
    assert f"line 3, column 'path': file {csv_path.parent / 'glioma' / 'gone.png'} does not exist" in ctx.caplog.text
