"""Write phantom data sets in exactly the on-disk layouts of the real downloads.

- ``write_lgg``: the kaggle_3m layout of the LGG segmentation set: ``kaggle_3m/<case>/<case>_<n>.tif``
  (256×256 RGB uint8, uncompressed) with ``<case>_<n>_mask.tif`` (single channel, 0/255), slice numbers
  not zero-padded, and ``kaggle_3m/data.csv`` with one row per patient and the real file's header.
- ``write_folders``: the class-folder layout of the 4-class set: ``Training/<class>/<prefix> (<i>).jpg``
  and the same under ``Testing/``, with the classes ``glioma_tumor``, ``meningioma_tumor``, ``no_tumor``
  and ``pituitary_tumor``.

Every patient and image draws from its own seeded generator, so a larger set begins with the same
patients as a smaller one generated with the same seed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tifffile

from tumorlab.synth.phantom import render_slice, sample_anatomy, sample_tumour

__all__ = ["LGG_CSV_HEADER", "FOLDER_CLASSES", "write_lgg", "write_folders", "lgg_case_name"]

LGG_CSV_HEADER = (
    "Patient,RNASeqCluster,MethylationCluster,miRNACluster,CNCluster,RPPACluster,OncosignCluster,"
    "COCCluster,histological_type,neoplasm_histologic_grade,tumor_tissue_site,laterality,tumor_location,"
    "gender,age_at_initial_pathologic,race,ethnicity,death01"
).split(",")

# Class folder -> (tumour kind drawn by the phantom, file-name prefix used by the real download).
FOLDER_CLASSES = {
    "glioma_tumor": ("glioma", "gg"),
    "meningioma_tumor": ("meningioma", "m"),
    "no_tumor": (None, "no"),
    "pituitary_tumor": ("pituitary", "p"),
}

_LGG_STREAM, _TRAIN_STREAM, _TEST_STREAM = 1, 2, 3


def lgg_case_name(index: int, site: str = "PH") -> str:
    """Case folder name of phantom patient ``index`` in the TCGA pattern ``TCGA_<site>_<id>_<date>``."""
    return f"TCGA_{site}_{index + 1:04d}_{20000101 + index:08d}"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out or pass --overwrite")


def write_lgg(
    out: str | Path,
    patients: int = 20,
    slices: tuple[int, int] = (20, 32),
    size: int = 256,
    seed: int = 0,
    difficulty: float = 0.3,
    overwrite: bool = False,
    sites: Sequence[str] = ("PH",),
    first_patient: int = 0,
) -> dict:
    """Write a phantom LGG set under ``out/kaggle_3m`` and return a summary (counts per patient).

    Patient ``p`` is ``TCGA_<site>_<first_patient + p + 1>``, its site taken from ``sites`` in turn (several
    sites give several institutions; ``first_patient`` gives a second set other patient ids).
    """
    out = Path(out)
    _check_out(out, overwrite)
    root = out / "kaggle_3m"
    root.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {"patients": 0, "slices": 0, "tumour_slices": 0}
    for p in range(patients):
        rng = np.random.default_rng([seed, _LGG_STREAM, p])
        anatomy = sample_anatomy(rng)
        tumour = sample_tumour("lgg", rng)
        n = int(rng.integers(slices[0], slices[1] + 1))
        case = lgg_case_name(first_patient + p, sites[p % len(sites)])
        (root / case).mkdir(exist_ok=True)
        for i in range(1, n + 1):
            z = 0.05 + 0.9 * (i - 1) / max(1, n - 1)
            image, mask = render_slice(size, z, anatomy, tumour, rng, difficulty)
            tifffile.imwrite(root / case / f"{case}_{i}.tif", image, photometric="rgb")
            tifffile.imwrite(root / case / f"{case}_{i}_mask.tif", mask, photometric="minisblack")
            summary["tumour_slices"] += int(mask.any())
        summary["patients"] += 1
        summary["slices"] += n
        rows.append(_lgg_csv_row(case, rng))
    with open(root / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LGG_CSV_HEADER)
        writer.writerows(rows)
    return summary


def _lgg_csv_row(case: str, rng: np.random.Generator) -> list:
    patient = "_".join(case.split("_")[:3])
    clusters = [int(rng.integers(1, 5)) for _ in range(7)]
    return [
        patient,
        *clusters,
        int(rng.integers(1, 3)),
        int(rng.integers(1, 3)),
        1,
        int(rng.integers(1, 4)),
        int(rng.integers(1, 4)),
        int(rng.integers(1, 3)),
        int(rng.integers(25, 80)),
        3,
        2,
        int(rng.integers(0, 2)),
    ]


def write_folders(
    out: str | Path,
    train_per_class: int = 60,
    test_per_class: int = 15,
    size: int = 256,
    seed: int = 0,
    difficulty: float = 0.3,
    overwrite: bool = False,
) -> dict:
    """Write a phantom 4-class set under ``out/Training`` and ``out/Testing``; return counts per split and class."""
    out = Path(out)
    _check_out(out, overwrite)
    summary: dict[str, dict[str, int]] = {}
    for split, count, stream in (
        ("Training", train_per_class, _TRAIN_STREAM),
        ("Testing", test_per_class, _TEST_STREAM),
    ):
        summary[split] = {}
        for c, (cls, (kind, prefix)) in enumerate(FOLDER_CLASSES.items()):
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, stream, c, i])
                image = _folder_image(rng, kind, size, difficulty)
                path = folder / f"{prefix} ({i + 1}).jpg"
                if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                    raise OSError(f"could not write {path}")
            summary[split][cls] = count
    return summary


def _folder_image(rng: np.random.Generator, kind: str | None, size: int, difficulty: float) -> np.ndarray:
    """One grey-level JPEG-ready slice (3 equal channels, like the real set) of a tumour class."""
    anatomy = sample_anatomy(rng)
    tumour = sample_tumour(kind, rng) if kind else None
    if tumour is not None:  # a slice through the tumour, near its widest extent
        z = tumour.z_center + rng.uniform(-0.5, 0.5) * tumour.z_half
    else:
        z = rng.uniform(0.2, 0.8)
    image, _ = render_slice(size, float(np.clip(z, 0.0, 1.0)), anatomy, tumour, rng, difficulty)
    # The 4-class set is mostly post-contrast T1: mix towards that channel and grey it.
    grey = (0.2 * image[..., 0] + 0.1 * image[..., 1] + 0.7 * image[..., 2]).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
