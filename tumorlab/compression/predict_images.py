"""``tumorlab predict-images``: predictions for image files with a trained run or an exported ONNX file.

Paths may be files, folders (searched recursively for .tif/.tiff/.jpg/.jpeg/.png/.bmp; LGG ``*_mask.*`` files
are skipped) or glob patterns. Each image gets the model's own preprocessing (from the run's data module, or
from the ONNX file's ``tumorlab.*`` metadata): RGB, the fed channels, the brain crop where the run used it, the
run's image size, ``(x / 255 - mean) / std``. ``predictions.csv`` has one row per image: ``file``,
``predicted_class``, ``prob_<class>`` per class, for segmentation models ``tumour_pixels``, ``mask`` and
``overlay`` (PNG files at the image's own size), and ``error``: why an image could not be read (its other
cells stay empty; the other images are still predicted).

With ``--onnx`` only onnxruntime, OpenCV and numpy run: torch is not imported (unless the model was trained
with the brain crop, whose outline detection lives with the data code).
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from tumorlab.errors import ConfigError, DataError, TumorlabError
from tumorlab.runs.predictions import prob_column  # the one column rule of every predictions.csv

# = tumorlab.data.io.IMAGE_SUFFIXES; importing tumorlab.data would import torch, which --onnx must not need
IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")

__all__ = ["IMAGE_SUFFIXES", "collect_images", "predict_images", "preprocess", "read_rgb"]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.endswith("_mask")


def _images_in(folder: Path) -> Iterator[Path]:
    yield from (p for p in sorted(folder.rglob("*")) if _is_image(p))


def collect_images(patterns: Sequence[str | Path]) -> list[Path]:
    """The image files that ``patterns`` (files, folders, globs) name, in order, each once.

    Folders and glob matches keep image files only, without LGG ``*_mask.*`` files; a file named on its own
    is always kept (a missing or unreadable one gets a row that says why).
    """
    seen: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = list(_images_in(path))
        elif any(c in str(pattern) for c in "*?["):
            found = []
            for match in sorted(glob.glob(str(pattern), recursive=True)):
                m = Path(match)
                found += list(_images_in(m)) if m.is_dir() else [m] if _is_image(m) else []
        else:
            found = [path]
        for p in found:
            seen.setdefault(p, None)
    return list(seen)


def read_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file, as ``tumorlab.data.io.read_image`` reads it (without torch)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if array is None:
        raise DataError(f"{path}: not a readable image (empty, corrupt, truncated or not an image)")
    if min(array.shape[:2]) < 8:  # = tumorlab.data.io.MIN_SIDE
        raise DataError(f"{path}: image is {array.shape[1]}x{array.shape[0]} pixels; expected at least 8x8")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path}: holds NaN or Inf pixel values")
    if array.dtype != np.uint8:  # 16-bit and float files: rescaled to 8 bits by their maximum
        hi = float(array.max())
        array = (array.astype(np.float32) * (255.0 / hi if hi > 0 else 1.0)).round().clip(0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] in (1, 2):
        array = np.ascontiguousarray(array[..., 0])
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    raise DataError(f"{path}: unsupported image shape {array.shape}; expected grey-level, RGB or RGBA")


def preprocess(path: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(model input (C, S, S) float32, the original RGB image)`` of one file, as the run's data module does."""
    rgb = read_rgb(path)
    image = rgb
    if meta.get("brain_crop"):
        from tumorlab.data.transforms import brain_bbox

        if (box := brain_bbox(image)) is not None:
            y0, y1, x0, x1 = box
            image = image[y0:y1, x0:x1]
    image = np.ascontiguousarray(image[..., list(meta["channels"])])
    size = int(meta["image_size"])
    shrink = image.shape[0] >= size and image.shape[1] >= size
    out = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out = out.reshape(size, size, -1).astype(np.float32) / 255.0
    out = (out - np.asarray(meta["mean"], np.float32)) / np.asarray(meta["std"], np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1)), rgb


class _Onnx:
    """An exported model in onnxruntime, with its metadata checked."""

    def __init__(self, path: str | Path) -> None:
        from tumorlab.compression.export import check_metadata, read_metadata

        if not Path(path).is_file():
            raise ConfigError(f"--onnx {path}: no such file")
        self.meta = read_metadata(path)
        check_metadata(self.meta, path)
        self.session = self.meta.pop("session")
        self.batch = self.session.get_inputs()[0].shape[0]  # an int: the file takes that batch size only

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if isinstance(self.batch, int):
            parts = [self.session.run(None, {"image": x[i : i + self.batch]}) for i in range(0, len(x), self.batch)]
            return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]
        return self.session.run(None, {"image": x})


class _Torch:
    """A run's network in PyTorch, with the metadata an export of it would carry."""

    def __init__(self, ckpt_path: str | Path) -> None:
        from tumorlab.compression.export import _OUTPUTS, _exportable, run_metadata
        from tumorlab.runs.load import load_run

        run = load_run(ckpt_path)
        self.run_dir = run.run_dir
        self.meta = {**run_metadata(run), "outputs": None}
        self.meta["outputs"] = _OUTPUTS[self.meta["task"]]
        self.module = _exportable(run.task, self.meta["task"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _probabilities(meta: dict, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """``(class probabilities (N, C), mask logits (N, S, S) or None, class names)``."""
    task = meta["task"]
    if task == "classification":
        probs, masks = _softmax(outputs[0]), None
    elif task == "multitask":
        probs, masks = _softmax(outputs[1]), outputs[0][:, 0]
    else:  # segmentation: the tumour probability of a slice is that of its most confident pixel, as in predict
        masks = outputs[0][:, 0]
        tumour = _sigmoid(masks.reshape(len(masks), -1).max(axis=1))
        probs = np.stack([1 - tumour, tumour], axis=1)
    names = [str(n) for n in meta.get("class_names") or []]
    if len(names) != probs.shape[1]:
        names = [str(i) for i in range(probs.shape[1])]
    return probs, masks, names


def _write_mask(out: Path, index: int, path: Path, mask_logits: np.ndarray, rgb: np.ndarray) -> dict:
    """Mask PNG (0/255) and overlay (tumour tinted red) at the image's own size; returns the CSV cells."""
    h, w = rgb.shape[:2]
    mask = cv2.resize((mask_logits > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    stem = f"{index:05d}_{path.stem}"
    mask_file, overlay_file = out / "masks" / f"{stem}_mask.png", out / "overlays" / f"{stem}_overlay.png"
    mask_file.parent.mkdir(exist_ok=True)
    overlay_file.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(mask_file), mask * 255)
    overlay = rgb.astype(np.float32)
    overlay[mask > 0] = 0.5 * overlay[mask > 0] + 0.5 * np.array([255, 0, 0], np.float32)
    cv2.imwrite(str(overlay_file), cv2.cvtColor(overlay.astype(np.uint8), cv2.COLOR_RGB2BGR))
    return {"mask": str(mask_file), "overlay": str(overlay_file)}


def _default_out(model, ckpt_path: str | None, onnx: str | None) -> Path:
    from tumorlab.runs.folders import new_run_dir

    if ckpt_path is not None:
        return new_run_dir(model.run_dir.parent.parent, model.run_dir.parent.name, "predict-images")
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(onnx).resolve().parent / f"{Path(onnx).stem}_{stamp}_predict-images"


def predict_images(
    paths: Sequence[str | Path],
    ckpt_path: str | None = None,
    onnx: str | None = None,
    out: str | Path | None = None,
    batch_size: int = 16,
    masks: bool = True,
) -> str:
    """Predict every image ``paths`` names and write ``predictions.csv`` (and masks); returns a summary line.

    Args:
        paths: files, folders or glob patterns.
        ckpt_path: a run folder or checkpoint (PyTorch); exactly one of it and ``onnx``.
        onnx: a file written by ``tumorlab export`` (onnxruntime).
        out: the output folder (default: a new folder beside the run, or beside the ONNX file).
        batch_size: images per forward pass.
        masks: segmentation models: write mask PNGs and overlays.
    """
    if (ckpt_path is None) == (onnx is None):
        raise ConfigError("predict-images needs exactly one of --ckpt_path RUN and --onnx FILE")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    files = collect_images(paths)
    if not files:
        raise ConfigError(f"no image files (.tif, .jpg, .png, .bmp ...) found in {', '.join(map(str, paths))}")
    model = _Onnx(onnx) if onnx is not None else _Torch(ckpt_path)
    folder = Path(out) if out else _default_out(model, ckpt_path, onnx)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for start in range(0, len(files), batch_size):
        rows += _predict_batch(model, files[start : start + batch_size], start, folder, masks)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    columns = [c for c in columns if c != "error"] + ["error"]
    with (folder / "predictions.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(1 for r in rows if r.get("error"))
    return f"predictions: {folder / 'predictions.csv'} ({len(rows)} images, {failed} unreadable)"


def _predict_batch(model, files: list[Path], start: int, folder: Path, masks: bool) -> list[dict]:
    rows: dict[int, dict] = {}
    inputs, originals, ok = [], [], []
    for i, path in enumerate(files):
        try:
            x, rgb = preprocess(path, model.meta)
        except (TumorlabError, OSError, cv2.error) as err:
            rows[i] = {"file": str(path), "error": str(err)}
            continue
        inputs.append(x)
        originals.append(rgb)
        ok.append(i)
    if ok:
        probs, mask_logits, names = _probabilities(model.meta, model(np.stack(inputs)))
        for j, i in enumerate(ok):
            row = {"file": str(files[i]), "predicted_class": names[int(probs[j].argmax())]}
            row |= {prob_column(n): float(p) for n, p in zip(names, probs[j], strict=True)}
            if mask_logits is not None:
                row["tumour_pixels"] = int((mask_logits[j] > 0).sum())
                if masks:
                    row |= _write_mask(folder, start + i, files[i], mask_logits[j], originals[j])
            rows[i] = row | {"error": ""}
    return [rows[i] for i in range(len(files))]
