"""Explain a trained run's predictions with class-activation maps (pytorch-grad-cam) and score where they point.

``tumorlab cam --ckpt_path RUN --images PATH... --out DIR`` rebuilds the run's model from its own
``config.yaml`` and best checkpoint (``tumorlab.runs.load.load_run``), prepares each image exactly as
the run was trained (size, channels, brain crop and normalisation from ``run.json``'s ``preprocessing`` and the
config, through the data layer's ``read_image`` / ``prepare`` / ``build_transforms``), and writes one overlay PNG
per image: the image, the CAM over it, the true class (where the image belongs to the run's data, or an LGG slice
has its ``<case>_<n>_mask.tif`` beside it), the predicted class with its probability and the class the CAM
explains. ``--misclassified`` adds the test images the model gets wrong; ``--score`` averages the
``localisation`` scores over the tumour slices of the test split (data with masks) into ``localisation.json``.

The maps (``tumorlab.evaluation.cam_maps``) hook each network's ``cam_layer`` (a ViT's: that block's ``norm1``) or
the module ``--layer`` names, with ``reshape_transform=net.cam_reshape`` (ViT tokens to patch maps); ``ClassLogits``
makes the multi-task U-Net's ``class_logits`` the explained output; ``--restrict brain`` zeroes them outside the
brain (``brain_mask``) before they are scored and drawn. Overlays explain the predicted class (and say so); the
localisation scores explain the true class (the tumour), since the question there is whether the evidence for
"tumour" lies on the tumour: with ``--score`` over the test split, and for each ``--images`` slice with a tumour
mask in ``cams.csv``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorlab.data.cache import Sample
from tumorlab.data.io import read_image, read_mask
from tumorlab.data.transforms import DecodeSpec, build_transforms, prepare
from tumorlab.errors import ConfigError, DataError
from tumorlab.evaluation.cam_maps import (
    METHODS,
    RESTRICTIONS,
    ClassLogits,
    Maps,
    brain_mask,
    build_maps,
    cam_extractor,
    cam_target_layer,
    compute_cams,
    predict,
)
from tumorlab.evaluation.localisation import (
    DEFAULT_TOLERANCE,
    DEFAULT_TOP,
    localisation_scores,
    mean_scores,
    peak_diagnostics,
)
from tumorlab.runs.load import load_run, read_run, resolve_run

__all__ = [
    "METHODS",
    "RESTRICTIONS",
    "CamItem",
    "ClassLogits",
    "cam_extractor",
    "cam_target_layer",
    "compute_cams",
    "draw_overlay",
    "mask_beside",
    "explain",
    "format_explanation",
    "run_preprocessing",
    "score_localisation",
]

LOCALISATION_FILE = "localisation.json"


# --- the run's model, data and preprocessing ------------------------------------------------------------------


def run_preprocessing(run_dir: str | Path) -> tuple[DecodeSpec, list[float], list[float]]:
    """How the run fed its images: the decode spec (size, channels, brain crop) and the normalisation mean/std."""
    folder = read_run(resolve_run(run_dir)[0])
    run, config, record = folder.path, folder.config, folder.record
    pre = record.get("preprocessing") or {}
    norm = pre.get("normalization") or {}
    if not pre.get("image_size") or not norm.get("mean"):
        raise ConfigError(f"{run / 'run.json'}: no preprocessing (image_size, normalization) recorded")
    channels = pre.get("channels") or [0, 1, 2]
    brain_crop = bool(((config.get("data") or {}).get("init_args") or {}).get("brain_crop"))
    return DecodeSpec(int(pre["image_size"]), tuple(channels), brain_crop), list(norm["mean"]), list(norm["std"])


@dataclass
class CamItem:
    """One image ready for the network: the normalised tensor ``(C, S, S)``, the prepared uint8 image
    ``(S, S, C)`` to draw, its mask ``(S, S)`` if known, its true class index if known, and its file."""

    tensor: torch.Tensor
    display: np.ndarray
    mask: np.ndarray | None
    label: int | None
    path: Path


def mask_beside(path: str | Path) -> Path | None:
    """The LGG mask of a slice outside the run's data: ``<case>_<n>_mask.tif`` (or ``.tiff``) beside
    ``<case>_<n>.tif``, if it is there."""
    path = Path(path)
    if path.stem.lower().endswith("_mask") or path.suffix.lower() not in (".tif", ".tiff"):
        return None
    return next((m for m in (path.with_name(f"{path.stem}_mask{x}") for x in (".tif", ".tiff")) if m.is_file()), None)


def load_item(
    path: str | Path, spec: DecodeSpec, mean: list[float], std: list[float], sample: Sample | None = None,
    tumour_classes: bool = True,
) -> CamItem:  # fmt: skip
    """A ``CamItem`` of an image file; ``sample`` (the run's own record of it) adds the true class and mask, else
    an LGG mask beside the slice (``mask_beside``) adds the mask and, where the classes are ``no_tumour, tumour``
    (``tumour_classes``), the true class."""
    path = Path(path)
    mask_file = sample.mask if sample is not None else mask_beside(path)
    full_mask = read_mask(mask_file) if mask_file is not None else None
    display, mask = prepare(read_image(path), full_mask, spec)
    tensor = build_transforms(False, None, mean, std)(image=display)["image"]
    label = None
    if sample is not None and sample.label >= 0:
        label = sample.label
    elif full_mask is not None and (sample is not None or tumour_classes):
        label = int(full_mask.any())  # LGG: tumour where the full-size mask has any tumour pixel, as the data layer
    return CamItem(tensor, display, mask, label, path)


def store_item(datamodule, i: int, mean: list[float], std: list[float]) -> CamItem:
    """A ``CamItem`` of sample ``i`` of a set-up data module, from its decode cache: a volume slice (named
    ``<file>#<axis>=<k>``), prepared as in training; the mask is the union of its channels (the whole tumour)."""
    display, mask = datamodule.store.load(i)
    tensor = build_transforms(False, None, mean, std)(image=display)["image"]
    union = None if mask is None else (mask > 0).astype(np.uint8)
    return CamItem(tensor, display, union, int(datamodule.store.labels[i]), Path(str(datamodule.samples[i].image)))


def _png_stem(path: Path) -> str:
    """The overlay's file name stem: the image's, or ``<volume>_<axis><k>`` for a volume slice."""
    if "#" not in path.name:
        return path.stem
    volume, _, where = path.name.partition("#")
    return f"{volume.split('.')[0]}_{where.replace('=', '')}"


# --- CAMs -----------------------------------------------------------------------------------------------------


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- drawing --------------------------------------------------------------------------------------------------


def _rgb(display: np.ndarray) -> np.ndarray:
    """The prepared image as float RGB in [0, 1]: three channels as they are, else the first one in grey."""
    image = display.astype(np.float32) / 255.0
    return image if image.shape[2] == 3 else np.repeat(image[..., :1], 3, axis=2)


def draw_overlay(item: CamItem, cam: np.ndarray, title: str, path: Path) -> Path:
    """Save the image beside the CAM over it (jet colour map), with ``title`` above; return ``path``."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from tumorlab.evaluation.figures import new_figure

    image = _rgb(item.display)
    fig = new_figure(figsize=(6.4, 3.6))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(show_cam_on_image(image, cam, use_rgb=True))
    if item.mask is not None and item.mask.any():
        axes[1].contour(item.mask, levels=[0.5], colors="white", linewidths=0.8)
    axes[1].set_title("CAM (white: tumour mask)" if item.mask is not None and item.mask.any() else "CAM", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# --- the command ----------------------------------------------------------------------------------------------


def _sample_index(datamodule) -> dict[Path, Sample]:
    return {Path(s.image).resolve(): s for s in getattr(datamodule, "samples", [])}


def _test_items(datamodule, spec: DecodeSpec, mean: list[float], std: list[float]) -> list[CamItem]:
    samples = _test_samples(datamodule)
    if hasattr(datamodule, "grid_of"):  # volume slices come from the decode cache, not from image files
        return [store_item(datamodule, int(i), mean, std) for i in datamodule.datasets["test"].indices]
    return [load_item(s.image, spec, mean, std, s) for s in samples]


def _test_samples(datamodule) -> list[Sample]:
    datamodule.setup("test")
    ds = datamodule.datasets["test"]
    return [datamodule.store.samples[i] for i in ds.indices]


SCORE_COLUMNS = ("pointing_game", "iou_top", "energy_share")  # per overlay, of the true class's CAM


def _overlays(net, maps: Maps, items: list[CamItem], names: list[str], out: Path, batch_size: int) -> list[dict]:
    rows = []
    for batch in _batches(items, batch_size):
        probs = predict(net, maps.inputs(batch))
        predicted = probs.argmax(dim=1).tolist()
        cams = maps(batch, predicted)
        scores = _item_scores(maps, batch)
        for item, cam, pred, p, score in zip(batch, cams, predicted, probs.tolist(), scores, strict=True):
            true = names[item.label] if item.label is not None else "unknown"
            title = (f"{item.path.name}\ntrue: {true}, predicted: {names[pred]} (p = {p[pred]:.2f})\n"
                     f"explains: {names[pred]} (predicted)")  # fmt: skip
            png = draw_overlay(item, cam, title, out / f"{len(rows):03d}_{_png_stem(item.path)}.png")
            rows.append({"file": str(item.path), "true_class": true, "predicted_class": names[pred],
                         "probability": round(p[pred], 4), "explained_class": names[pred], "overlay": png.name,
                         **maps.columns, **score})  # fmt: skip
    return rows


def _item_scores(maps: Maps, batch: list[CamItem]) -> list[dict]:
    """``SCORE_COLUMNS`` of each item with a tumour mask and a true class (the CAM of that class), else empty."""
    scored = [k for k, it in enumerate(batch) if it.mask is not None and it.mask.any() and it.label is not None]
    out = [dict.fromkeys(SCORE_COLUMNS, "") for _ in batch]
    if scored:
        cams = maps([batch[k] for k in scored], [batch[k].label for k in scored])
        for k, cam in zip(scored, cams, strict=True):
            values = localisation_scores(cam, batch[k].mask, maps.tolerance, maps.top, maps.region(batch[k]))
            out[k] = {c: round(float(values[c]), 4) for c in SCORE_COLUMNS}
    return out


def _misclassified(net, items: list[CamItem], batch_size: int) -> list[CamItem]:
    wrong = []
    for batch in _batches(items, batch_size):
        predicted = predict(net, torch.stack([it.tensor for it in batch])).argmax(dim=1).tolist()
        wrong += [it for it, p in zip(batch, predicted, strict=True) if p != it.label]
    return wrong


def score_localisation(net, maps: Maps, items: list[CamItem], batch_size: int = 16) -> dict:
    """Mean localisation scores of the CAMs of the true class over ``items`` with a non-empty mask, their chance
    levels (inside the region the maps may point at), where the maxima fell (``peak_diagnostics`` against each
    slice's ``brain_mask``) and ``tumour_in_brain``, the share of tumour pixels inside that brain mask; the same
    means over the slices ``net`` classifies correctly (``detected``: where it finds the class it is explained
    for, as the run classifies the slice itself, without ``--pad``'s canvas), since a map of a class the network
    does not see there has nothing to point at."""
    scored = [it for it in items if it.mask is not None and it.mask.any() and it.label is not None]
    rows = []
    for batch in _batches(scored, batch_size):
        predicted = predict(net, torch.stack([it.tensor for it in batch])).argmax(dim=1).tolist()
        in_canvas = predict(net, maps.inputs(batch)).argmax(dim=1).tolist() if maps.pad else predicted
        cams = maps(batch, [it.label for it in batch])
        for cam, it, pred, pred_canvas in zip(cams, batch, predicted, in_canvas, strict=True):
            brain, region = brain_mask(it.display), maps.region(it)
            rows.append({
                "file": str(it.path),
                "detected": float(pred == it.label),
                **({"detected_in_canvas": float(pred_canvas == it.label)} if maps.pad else {}),
                **localisation_scores(cam, it.mask, maps.tolerance, maps.top, region),
                **peak_diagnostics(cam, it.mask, brain, region),
                "tumour_in_brain": float(brain[it.mask > 0].mean()),
            })  # fmt: skip
    summary = {"slices": len(rows), "tolerance_px": maps.tolerance, "top_fraction": maps.top, **_means(rows)}
    detected = [r for r in rows if r["detected"]]
    summary["detected"] = {"slices": len(detected), **_means(detected)}
    if maps.pad:  # the canvas may change what the network sees: how many it still classifies correctly there
        summary["detected_in_canvas_slices"] = int(sum(r["detected_in_canvas"] for r in rows))
    return {**summary, "per_slice": rows}


def _means(rows: list[dict]) -> dict:
    means = mean_scores(
        [{k: v for k, v in r.items() if k not in ("file", "detected", "detected_in_canvas")} for r in rows]
    )
    for key in ("peak_y", "peak_x"):  # a mean position says nothing; the per-slice values stay in the csv
        means.pop(key, None)
    return means


def _write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _items(paths: list[str], datamodule, spec: DecodeSpec, mean: list[float], std: list[float],
           tumour_classes: bool = True) -> list[CamItem]:  # fmt: skip
    if hasattr(datamodule, "grid_of"):  # volumes: slices are named as in predictions.csv, <file>#<axis>=<k>
        datamodule.setup("test")
        where = {str(s.image): i for i, s in enumerate(datamodule.samples)}
        missing = [p for p in paths if p not in where]
        if missing:
            raise DataError(f"--images {missing[0]}: not a slice of the run's data; expected <file>#<axis>=<k>")
        return [store_item(datamodule, where[p], mean, std) for p in paths]
    known = _sample_index(datamodule)
    items = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"--images {path}: no such file")
        items.append(load_item(path, spec, mean, std, known.get(Path(path).resolve()), tumour_classes))
    return items


def explain(
    run_dir: str | Path,
    out: str | Path,
    images: list[str] | None = None,
    method: str = "gradcam",
    misclassified: bool = False,
    score: bool = False,
    limit: int = 50,
    data_root: str | None = None,
    batch_size: int = 16,
    tolerance: float = DEFAULT_TOLERANCE,
    top: float = DEFAULT_TOP,
    device: str | None = None,
    layer: str | None = None,
    restriction: str = "none",
    pad: int = 0,
) -> dict:
    """What ``tumorlab cam`` does: overlays into ``out`` (listed in ``out/cams.csv``) and, with ``score``,
    ``out/localisation.json`` (the means) and ``out/localisation.csv`` (per slice).

    Returns ``{"overlays": [...rows of cams.csv], "localisation": {...} or None}``. ``device``: where the network
    runs (default: CUDA when available); ``layer``: the module to hook, by its ``named_modules`` name in the
    network (default: its ``cam_layer``); ``restriction``: ``brain`` zeroes the maps outside the brain; ``pad``: px
    of background around each slice the network sees (``pad_images``), the maps cropped back to the slice.
    """
    if not images and not misclassified and not score:
        raise ConfigError("tumorlab cam needs --images PATH..., --misclassified or --score")
    if restriction not in RESTRICTIONS:
        raise ConfigError(f"--restrict must be one of {list(RESTRICTIONS)}, got {restriction!r}")
    if pad < 0:
        raise ConfigError(f"--pad must be >= 0 pixels, got {pad}")
    task, datamodule = load_run(run_dir, data_root=data_root)
    spec, mean, std = run_preprocessing(run_dir)
    net = task.net.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if getattr(net, "tta", None):  # the hooks see one forward pass per layer: explain the untransformed images only
        net.tta = ()
    names = list(getattr(datamodule, "class_names", None) or [str(i) for i in range(net.num_classes)])
    items = _items(list(images or []), datamodule, spec, mean, std, names == ["no_tumour", "tumour"])
    test = _test_items(datamodule, spec, mean, std) if misclassified or score else []
    if score and not any(it.mask is not None for it in test):
        raise DataError(f"--score needs data with tumour masks; the run's data ({type(datamodule).__name__}) has none")
    if misclassified:
        items += _misclassified(net, test, batch_size)[:limit]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    maps, shape = build_maps(net, (items or test)[:1], method, layer, restriction, tolerance, top, pad, mean, std)
    rows = _overlays(net, maps, items, names, out, batch_size)
    if rows:
        _write_csv(rows, out / "cams.csv")
    result = None
    if score:
        scores = score_localisation(net, maps, test, batch_size)
        if scores["per_slice"]:
            _write_csv(scores["per_slice"], out / "localisation.csv")
        result = {"run": str(resolve_run(run_dir)[0]), **maps.columns, "layer_shape": shape, "split": "test",
                  **{k: v for k, v in scores.items() if k != "per_slice"}}  # fmt: skip
        (out / LOCALISATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return {"overlays": rows, "localisation": result}


def format_explanation(result: dict, out: str | Path) -> str:
    """What ``tumorlab cam`` prints: one line per overlay, then the localisation means (with ``--score``)."""
    scored = "; pointing game {pointing_game}, energy share {energy_share}"
    lines = [
        f"{r['overlay']}: true {r['true_class']}, predicted {r['predicted_class']} (p = {r['probability']}), "
        f"explains {r['explained_class']} (predicted)" + (scored.format(**r) if r["pointing_game"] != "" else "")
        for r in result["overlays"]
    ]
    lines.append(f"{len(result['overlays'])} overlays in {out}")
    s = result["localisation"]
    if s is not None:
        lines.append(
            f"localisation over {s['slices']} tumour slices of the test split ({s['method']} on {s['layer']}, "
            f"restricted to: {'the brain' if s['restriction'] == 'brain' else 'nothing'}): pointing game "
            f"{s['pointing_game']:.3f} (chance {s['pointing_chance']:.3f}, tolerance {s['tolerance_px']:g} px), "
            f"IoU of the top {s['top_fraction']:.0%} {s['iou_top']:.3f} (chance {s['iou_chance']:.3f}), energy "
            f"inside the mask {s['energy_share']:.3f} (mask share {s['mask_share']:.3f}); maxima at the image "
            f"border {s['peak_at_border']:.3f}, outside the brain {1 - s['peak_in_brain']:.3f}"
        )
        d = s["detected"]
        lines.append(
            f"on the {d['slices']} of them the network classifies correctly: pointing game "
            f"{d.get('pointing_game', float('nan')):.3f} (chance {d.get('pointing_chance', float('nan')):.3f}) -> "
            f"{Path(out) / LOCALISATION_FILE}"
        )
    return "\n".join(lines)
