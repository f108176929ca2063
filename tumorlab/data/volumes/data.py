"""``VolumeData``: NIfTI volumes and DICOM series as 2D slices, on the base every tumorlab DataModule shares.

``__init__`` finds the subjects (``layouts``), checks every header (``subjects.check_subject``) and then runs
``inspect``, so that every refusal (a missing file or modality, a 4D file where a 3D one belongs, modalities on
different grids, a truncated file, NaN voxels, an unknown label value) stops the run before anything is written.
``inspect`` decompresses each volume once, normalises it, maps its labels,
picks its slices and stores the prepared slices in the shared ``DecodeCache`` (memory, or disk: reused by later
runs on unchanged files and settings). Splits, duplicate groups, loaders and batches are those of ``TumorData``:
a batch carries ``image`` ``(N, M, S, S)`` (one channel per modality), ``mask`` ``(N, R, S, S)`` (one channel per
label-map region), ``label``, ``patient`` (the subject) and ``image_path`` (``<first modality file>#<axis>=<k>``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tumorlab.data.base import TumorData
from tumorlab.data.cache import DecodeCache, Sample, SampleInfo, _stat, default_cache_dir
from tumorlab.data.duplicates import phash_bits
from tumorlab.data.lgg import LGGData
from tumorlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, DecodeSpec, prepare
from tumorlab.data.volumes.labels import apply_label_map, resolve_label_map
from tumorlab.data.volumes.layouts import LAYOUTS, Subject, detect_volume_layout, read_class_csv, read_layout
from tumorlab.data.volumes.slices import AXES, INTENSITY, SELECTIONS, normalise, select_slices, slice_plane
from tumorlab.data.volumes.subjects import SubjectGrid, check_subject, decode_subject
from tumorlab.errors import ConfigError, DataError

__all__ = ["VolumeData", "VolumeSpec", "slice_id", "parse_slice_id"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeSpec(DecodeSpec):
    """``DecodeSpec`` plus a digest of the volume settings and of every file's path, size and time."""

    digest: str = ""

    def key(self) -> str:
        return f"vol_{super().key()}_{self.digest[:16]}"


def slice_id(path: str | Path, axis: str, k: int) -> str:
    """The ``image_path`` of slice ``k``: ``<file>#<axis>=<k>``."""
    return f"{path}#{axis}={k}"


def parse_slice_id(text: str) -> tuple[str, str, int]:
    """``<file>#<axis>=<k>`` -> ``(file, axis, k)``."""
    path, _, rest = str(text).rpartition("#")
    axis, _, k = rest.partition("=")
    return path, axis, int(k)


class VolumeData(TumorData):
    """Volumes (NIfTI, DICOM) of a datalist or a BraTS, Decathlon, nnU-Net raw or DICOM folder, as 2D slices.

    Args:
        root: a datalist JSON (``{"training": [{"image": ..., "label": ...}]}``) or a data folder.
        layout: ``auto`` (from ``root``), ``datalist``, ``brats``, ``decathlon``, ``nnunet`` or ``dicom``.
        task: ``segmentation`` / ``multitask`` batches carry ``mask``; ``classification`` batches do not.
        modalities: the modalities fed as channels, in this order (``[flair, t1ce, t2]`` for an ImageNet
            backbone, all four with ``in_channels: 4``); names as in ``layouts.MODALITY_ALIASES``. ``None``:
            every modality of the first subject, in the layout's order.
        label_map: ``auto`` (the layout's own: ``brats2021``, ``brats2023``, ``decathlon``, a dataset.json's
            nnU-Net regions, else ``binary``), a preset name, or ``{channel: [voxel values]}``.
        axis: ``axial``, ``coronal`` or ``sagittal``: the slicing axis after reorientation to RAS.
        intensity: per-volume normalisation ``zscore``, ``percentile`` or ``none`` (``slices`` module docstring).
        value_range: with ``intensity: none``, the value range mapped to the full intensity scale.
        slices: ``all``, ``brain``, ``tumour`` or ``tumour_balanced`` (``slices.select_slices``).
        slice_step: every k-th slice.
        max_slices_per_subject: at most this many slices per subject (drawn with ``seed``).
        class_csv: a ``subject,class`` CSV of per-subject classes (ReMIND's tumour types).
        classes: the class names and their order; ``None``: sorted names found.
        label_source: what ``label`` is: ``tumour`` (1 where the slice's mask has tumour: the multi-task
            U-Net's slice label), ``class`` (the subject's class), ``auto`` (``class`` for classification where
            classes are given, else ``tumour``).
        series_modalities: DICOM: ``{modality: regular expression}`` searched in each ``SeriesDescription``
            (``{flair: "flair", t1ce: "t1.*(post|gd|\\+c)"}``), as exports name series freely; series matching none
            are passed over and listed (``skipped_files``). ``None``: the description names the modality.
        image_size: side in pixels that slices (and masks) are resized to.
        batch_size: slices per batch.
        **kwargs: the shared options of ``TumorDataModule`` (split, num_folds, seed, augment, cache, on_bad_file,
            normalize, ...). ``on_bad_file: skip`` leaves out whole subjects (``skipped_subjects``), never a part.
    """

    split_units = ("slices", "subjects")  # what the split line of fit counts: samples, groups kept whole

    def __init__(
        self,
        root: str,
        layout: Literal["auto", "datalist", "brats", "decathlon", "nnunet", "dicom"] = "auto",
        task: Literal["segmentation", "classification", "multitask"] = "multitask",
        modalities: list[str] | None = None,
        label_map: str | dict[str, list[int]] | None = "auto",
        axis: Literal["axial", "coronal", "sagittal"] = "axial",
        intensity: Literal["zscore", "percentile", "none"] = "zscore",
        value_range: tuple[float, float] = (0.0, 1.0),
        slices: Literal["all", "brain", "tumour", "tumour_balanced"] = "brain",
        slice_step: int = 1,
        max_slices_per_subject: int | None = None,
        class_csv: str | None = None,
        classes: list[str] | None = None,
        label_source: Literal["auto", "tumour", "class"] = "auto",
        series_modalities: dict[str, str] | None = None,
        image_size: int = 128,
        batch_size: int = 16,
        **kwargs,
    ) -> None:
        if "channels" in kwargs:
            raise ConfigError("data.channels does not apply to volumes; choose data.modalities instead")
        normalize = kwargs.pop("normalize", None)  # one value per modality: set once the modalities are known
        super().__init__(image_size=image_size, batch_size=batch_size, channels=[0], **kwargs)
        self._check_args(task, axis, intensity, slices, slice_step, max_slices_per_subject, label_source, value_range)
        if self.cache == "none":
            raise ConfigError("data.cache: none would decompress every volume again for each slice; use memory or disk")
        self.root, self.task, self.axis, self.intensity = root, task, axis, intensity
        self.value_range, self.slice_selection, self.slice_step = tuple(value_range), slices, slice_step
        self.max_slices_per_subject = max_slices_per_subject
        self.layout = detect_volume_layout(root) if layout == "auto" else layout
        if self.layout is None:
            raise DataError(f"{root}: not a datalist JSON nor a folder in a known volume layout ({', '.join(LAYOUTS)})")
        subjects, default_map = read_layout(root, self.layout, self.skipped_files, series_modalities=series_modalities)
        self.label_map = resolve_label_map(label_map, default_map)
        self.mask_channels = 1 if self.label_map is None else len(self.label_map)
        self.region_names = ["tumour"] if self.label_map is None else list(self.label_map)
        self.with_mask = task != "classification"
        if class_csv is not None:
            by_subject = read_class_csv(class_csv)
            for s in subjects:
                s.class_name = by_subject.get(s.id, s.class_name)
        self.modalities = list(modalities) if modalities else list(subjects[0].images)
        self.skipped_subjects: list[tuple[str, str]] = []
        self.label_values: dict[str, list[int]] = {}  # voxel values of each label volume decoded (audit)
        self.subjects, self.grids = self._check_subjects(subjects)
        self.channels, self.in_channels = list(range(len(self.modalities))), len(self.modalities)
        self._set_classes(classes, label_source)
        if normalize is not None:
            if not isinstance(normalize, dict) or set(normalize) != {"mean", "std"}:
                raise ConfigError(f"data.normalize must be {{mean: [...], std: [...]}} or null, got {normalize!r}")
            self.set_normalization(normalize["mean"], normalize["std"], source="data.normalize")
        # Decode now, not in setup(): a truncated file, NaN voxels or an unknown label value then stop the run
        # before its folder exists, as the header checks above do ("nothing is written when input is refused").
        self.inspect()

    @staticmethod
    def _check_args(task, axis, intensity, slices, step, cap, label_source, value_range) -> None:
        for key, value, allowed in (
            ("task", task, ("segmentation", "classification", "multitask")),
            ("axis", axis, tuple(AXES)),
            ("intensity", intensity, INTENSITY),
            ("slices", slices, SELECTIONS),
            ("label_source", label_source, ("auto", "tumour", "class")),
        ):
            if value not in allowed:
                raise ConfigError(f"data.{key} must be one of {list(allowed)}, got {value!r}")
        if step < 1 or (cap is not None and cap < 1):
            raise ConfigError(f"data.slice_step and data.max_slices_per_subject must be >= 1, got {step}, {cap}")
        if len(value_range) != 2 or not value_range[1] > value_range[0]:
            raise ConfigError(f"data.value_range must be [low, high] with high > low, got {list(value_range)}")

    def _refuse(self, subject: Subject, message: str) -> None:
        """``on_bad_file: raise``: stop with ``message``; ``skip``: leave the whole subject out and list it."""
        if self.on_bad_file == "raise":
            raise DataError(message)
        self.skipped_subjects.append((subject.id, message))
        log.warning("skipped subject %s (on_bad_file: skip): %s", subject.id, message)

    def _check_subjects(self, subjects: list[Subject]) -> tuple[list[Subject], dict[str, SubjectGrid]]:
        ids = [s.id for s in subjects]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise DataError(f"{self.root}: subject ids listed more than once: {', '.join(repeated[:5])}")
        kept, grids = [], {}
        for s in subjects:
            if self.with_mask and s.label is None and s.split == "test" and self.layout == "datalist":
                self.skipped_files.append((s.where, "test entry without a label"))
                continue
            try:
                grids[s.id] = check_subject(s, self.modalities, needs_label=self.with_mask)
            except DataError as err:
                self._refuse(s, str(err))
                continue
            kept.append(s)
        if not kept:
            raise DataError(f"{self.root}: no usable subject (first problem: {self.skipped_subjects[0][1]})")
        return kept, grids

    def _set_classes(self, classes: list[str] | None, label_source: str) -> None:
        named = sorted({s.class_name for s in self.subjects if s.class_name is not None})
        if label_source == "auto":
            label_source = "class" if self.task == "classification" and named else "tumour"
        self.label_source = label_source
        if label_source == "tumour":
            if self.task == "classification" and all(s.label is None for s in self.subjects):
                raise ConfigError("data.label_source: tumour needs label volumes; give classes (class_csv)")
            self.class_names, self.num_classes = ["no_tumour", "tumour"], 2
            return
        unlabelled = [s.id for s in self.subjects if s.class_name is None]
        if unlabelled:
            raise DataError(f"{self.root}: subjects without a class: {', '.join(unlabelled[:5])} (class_csv?)")
        names = list(classes) if classes is not None else named
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise ConfigError(f"data.classes {names} lacks the classes {unknown} found in the data")
        self.class_names, self.num_classes = names, len(names)

    # --- decoding -------------------------------------------------------------------------------------

    def decode_spec(self) -> VolumeSpec:
        settings = [
            self.layout, self.modalities, self.label_map, self.axis, self.intensity, list(self.value_range),
            self.slice_selection, self.slice_step, self.max_slices_per_subject, self.seed, self.label_source,
        ]  # fmt: skip
        files = [
            [s.id, s.split, s.class_name]
            + [_stat(c.path) + [c.index] for c in (*(s.images[m] for m in self.modalities), s.label) if c is not None]
            for s in self.subjects
        ]
        digest = hashlib.sha256(json.dumps([settings, files], default=str).encode()).hexdigest()
        return VolumeSpec(self.image_size, tuple(self.channels), bool(self.brain_crop), digest)

    def inspect(self, perceptual_hashes: bool = False) -> None:
        """Decode every subject once into the cache, pick slices, hash volumes; see ``TumorData.inspect``."""
        spec = self.decode_spec()
        if self._inspected == spec:
            return
        listing = Path(self.cache_dir or default_cache_dir()) / f"{spec.key()}.samples.json"
        cache = None
        if self.cache == "disk" and listing.is_file():
            self.samples = [_sample_from_json(row) for row in json.loads(listing.read_text())]
            cache = DecodeCache(self.samples, spec, "disk", self.cache_dir)
        if cache is not None and cache.complete:
            infos = cache.infos
        else:
            parts = self._decode_all(spec)
            self.samples = [x for p in parts for x in p[0]]
            infos = [x for p in parts for x in p[1]]
            cache = DecodeCache(self.samples, spec, self.cache, self.cache_dir)
            n = 0
            for _, _, images, masks in parts:
                for j in range(len(images)):
                    cache.put(n, images[j], None if masks is None else masks[j])
                    n += 1
            cache.finish(infos)
            if self.cache == "disk":
                listing.write_text(json.dumps([_sample_to_json(s) for s in self.samples]))
        if not self.samples:
            raise DataError(f"{self.root}: no slices selected (data.slices: {self.slice_selection})")
        self._cache, self.infos, self.bad_files = cache, infos, []
        self.keep = np.ones(len(self.samples), dtype=bool)
        self.labels = self.sample_labels(infos)
        self.duplicate_labels, self.duplicate_ids = self._volume_groups(infos)
        self._inspected, self._hashed = spec, True

    def _decode_all(self, spec: VolumeSpec) -> list[tuple]:
        with ThreadPoolExecutor(max_workers=2) as pool:  # gzip decompression releases the GIL
            results = list(pool.map(lambda s: self._decode_subject(s, spec), self.subjects))
        parts = []
        for subject, result in zip(self.subjects, results, strict=True):
            if isinstance(result, DataError):
                self._refuse(subject, str(result))
            else:
                parts.append(result)
        if self.skipped_subjects:
            skipped = {i for i, _ in self.skipped_subjects}
            self.subjects = [s for s in self.subjects if s.id not in skipped]
        return parts

    def _decode_subject(self, subject: Subject, spec: VolumeSpec):
        try:
            return self._slices_of(subject, spec)
        except DataError as err:
            return err

    def _slices_of(self, subject: Subject, spec: VolumeSpec) -> tuple:
        raw, label = decode_subject(subject, self.modalities, self.with_mask or self.label_source == "tumour")
        volume_sha = hashlib.sha256(raw.tobytes()).hexdigest()
        if label is not None:
            self.label_values[subject.id] = [int(v) if float(v).is_integer() else float(v) for v in np.unique(label)]
        channels = []
        for m, name in enumerate(self.modalities):
            u8, clipped = normalise(raw[..., m], self.intensity, subject.images[name].describe(), self.value_range)
            if clipped:
                log.warning("%s: %d voxels outside data.value_range were clipped", subject.images[name].path, clipped)
            channels.append(u8)
        volume = np.stack(channels, axis=-1)
        packed = None if label is None else apply_label_map(label, self.label_map, subject.label.path)
        axis = AXES[self.axis]
        others = tuple(a for a in range(3) if a != axis)
        brain = (volume.max(axis=-1) > 0).sum(axis=others)
        tumour = None if packed is None else (packed > 0).sum(axis=others)
        rng = np.random.default_rng([self.seed, zlib.crc32(subject.id.encode())])
        chosen = select_slices(brain, tumour, self.slice_selection, self.slice_step, self.max_slices_per_subject, rng)
        cls = -1 if self.label_source == "tumour" else self.class_names.index(subject.class_name)
        first = subject.images[self.modalities[0]].path
        samples, infos, images, masks = [], [], [], []
        for k in chosen.tolist():
            image = slice_plane(volume, axis, k)
            mask = None if packed is None else slice_plane(packed, axis, k)
            prepared, small = prepare(image, mask if self.with_mask else None, spec)
            images.append(prepared)
            masks.append(small)
            grey = image.mean(axis=-1).astype(np.uint8)
            infos.append(
                SampleInfo(
                    sha256=volume_sha,
                    phash=phash_bits(np.repeat(grey[..., None], 3, axis=2)).tobytes().hex(),
                    height=image.shape[0],
                    width=image.shape[1],
                    mode=f"{len(self.modalities)}-modality slice",
                    mask_pixels=None if mask is None else int((mask > 0).sum()),
                )
            )
            label_path = subject.label.path if subject.label is not None else None
            samples.append(
                Sample(
                    Path(slice_id(first, self.axis, k)),
                    cls,
                    subject.id,
                    label_path if self.with_mask else None,
                    fixed_split=subject.split,
                    source=subject.where,
                    index=k,
                )
            )
        stacked = np.stack(images) if images else np.zeros((0,), np.uint8)
        return samples, infos, stacked, (np.stack(masks) if self.with_mask and masks else None)

    def _volume_groups(self, infos: list[SampleInfo]) -> tuple[np.ndarray, list[str]]:
        """Duplicate groups by volume content: subjects with identical volumes share a group (and a split)."""
        from tumorlab.data.duplicates import duplicate_groups

        sha = [x.sha256 for x in infos]
        labels, ids = duplicate_groups(sha, self.keep, "none" if self.duplicates == "none" else "exact")
        by_hash: dict[str, set[str]] = {}
        for s, h in zip(self.samples, sha, strict=True):
            by_hash.setdefault(h, set()).add(s.patient)
        self.identical_volumes = sorted(sorted(v) for v in by_hash.values() if len(v) > 1)
        for group in self.identical_volumes:
            log.warning("identical volumes in subjects %s: kept in one split", ", ".join(group))
        return labels, ids

    def sample_labels(self, infos: list[SampleInfo]) -> np.ndarray:
        """The subject's class, or 1 where the slice's full-size mask has tumour (``label_source``)."""
        if self.label_source == "tumour":
            return np.array([int((x.mask_pixels or 0) > 0) for x in infos], dtype=np.int64)
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def strata(self, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Tumour-burden bins of the subject (as LGG) for tumour labels, else the class."""
        return LGGData.strata(self, labels, keep) if self.label_source == "tumour" else labels

    @property
    def normalization(self) -> dict:
        """As ``TumorData.normalization``; beyond 3 modalities the default is ImageNet's grey statistics for each."""
        if self._normalization is not None or len(self.channels) <= 3:
            return super().normalization
        n = len(self.channels)
        return {
            "mean": [float(np.mean(IMAGENET_MEAN))] * n,
            "std": [float(np.mean(IMAGENET_STD))] * n,
            "source": "ImageNet grey-level statistics per modality (data.normalize: null)",
        }

    def grid_of(self, subject: str) -> SubjectGrid:
        """The RAS grid (shape, affine, spacing) of a subject, for stacking its slices back into a volume."""
        return self.grids[subject]

    def subject(self, subject_id: str) -> Subject:
        """The ``Subject`` record of ``subject_id``."""
        return next(s for s in self.subjects if s.id == subject_id)


def _sample_to_json(s: Sample) -> dict:
    return {
        "image": str(s.image), "label": s.label, "patient": s.patient, "mask": None if s.mask is None else str(s.mask),
        "fixed_split": s.fixed_split, "source": s.source, "index": s.index,
    }  # fmt: skip


def _sample_from_json(row: dict) -> Sample:
    return Sample(
        Path(row["image"]), row["label"], row["patient"], None if row["mask"] is None else Path(row["mask"]),
        row["fixed_split"], row["source"], row["index"],
    )  # fmt: skip
