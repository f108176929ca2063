"""What every tumorlab DataModule shares: the decode pass and cache, duplicate groups, leak-proof splits,
class weights, the weighted sampler and the loaders (``loaders.make_loader``: a ``SeededSampler`` for training,
so that a resumed fit sees the batches an uninterrupted one would).

``TumorData`` holds all of it and imports no Lightning (``tumorlab audit`` uses it as it is);
``tumorlab.data.modules`` turns it and its subclasses into Lightning DataModules (``TumorDataModule`` ...).

A subclass lists its samples in ``__init__`` (``self.samples``, ``num_classes``, ``class_names``) so that a bad
root fails before any run folder exists; ``setup()`` does the rest:

1. one pass over every file (``cache.inspect_samples``): content hash, decode check (in every cache mode, so
   a corrupt file stops ``setup`` and never a loader worker mid-epoch), perceptual hash when near-duplicates
   are asked for, prepared arrays into the decode cache (none kept with ``cache: none``);
2. bad files raise (``on_bad_file: raise``) or are skipped, counted and reported (``skip``);
3. duplicate groups (exact, or exact + near: ``duplicates.duplicate_groups``) are merged with patients into
   split units (``splits.split_units``), so neither a patient nor a duplicate group can straddle two splits;
   copies of test images in the training data are dropped from training (``test_duplicates: drop``,
   ``splits.apply_test_duplicates``) or raise;
4. the split (hold-out fractions or k-fold, stratified) is drawn and verified by ``check_disjoint``
   (``splits.assign_splits``);
5. the datasets normalise with ``normalization`` (the model's statistics, or ImageNet's by default).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tumorlab.data.cache import DecodeCache, Sample, SampleInfo, inspect_samples
from tumorlab.data.checks import check_settings, check_split_classes
from tumorlab.data.dataset import SampleDataset, SampleStore
from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD, duplicate_groups
from tumorlab.data.loaders import default_workers, make_loader, predict_dataset
from tumorlab.data.splits import SPLITS, apply_test_duplicates, assign_splits, held_out_group
from tumorlab.data.transforms import (
    DecodeSpec,
    build_transforms,
    check_augment,
    check_normalization,
    imagenet_statistics,
)
from tumorlab.errors import ConfigError, DataError

__all__ = ["TumorData"]

log = logging.getLogger(__name__)


class TumorData:
    """What every tumorlab DataModule does, without Lightning; the arguments below are shared by all of them.

    ``tumorlab.data.modules`` makes the Lightning DataModules of it (``TumorDataModule``, ``LGGDataModule`` ...);
    ``tumorlab audit`` uses the classes here (``LGGData`` ...), which read, inspect and split the same files
    without importing Lightning.

    Args:
        image_size: side in pixels that images (and masks) are resized to, after the optional brain crop.
        batch_size: samples per batch.
        num_workers: loader processes; ``None`` picks ``default_workers()`` for this machine.
        channels: which of the RGB channels to feed the model (LGG: 0 pre-contrast, 1 FLAIR, 2 post-contrast);
            sets ``in_channels``.
        split: train/val/test shares of patients (or duplicate groups). Where the data fixes the test set,
            only the train:val ratio is used.
        num_folds: k-fold cross-validation of the non-test patients (``StratifiedGroupKFold``); ``None``: hold-out.
        fold: the fold that validates, in ``[0, num_folds)``.
        seed: random state of the split.
        augment: training augmentations, e.g. ``{hflip: 0.5, affine: {shift: 0.05, scale: 0.1, rotate: 10},
            brightness_contrast: 0.5, elastic: {p: 0.2}}`` (keys: hflip, vflip, rotate, affine,
            brightness_contrast, elastic; a number is the probability). ``null``: ``{hflip: 0.5}``;
            ``{}``: none. Validation and test are never augmented.
        brain_crop: crop each image (and its mask) to the brain's extreme points before resizing.
        cache: ``memory`` keeps decoded, resized images in RAM; ``disk`` in memory-mapped files under
            ``cache_dir`` (reused across runs while files and settings are unchanged); ``none`` decodes
            in the loader every epoch.
        cache_dir: folder of on-disk caches (default ``$TUMORLAB_CACHE_DIR`` or ``~/.cache/tumorlab``).
        weighted_sampler: draw training samples with probability inversely proportional to their class
            frequency (with replacement, one epoch = as many draws as training samples).
        on_bad_file: ``raise`` stops at the first unreadable, empty or mismatched file, naming it and the
            cause; ``skip`` leaves such files out, counts them and reports the count (``bad_files``).
        duplicates: ``exact`` groups byte-identical files (SHA-256); ``near`` also images whose 256-bit
            perceptual hashes differ in at most ``near_threshold`` bits; ``none`` skips both. A group never
            straddles two splits.
        near_threshold: bits of perceptual-hash difference that still count as the same image (of 256).
        test_duplicates: where the test set is given (a ``Testing/`` root, ``test_root``, a manifest
            ``split`` column), training images with a copy in it are dropped from training (``drop``,
            reported) or stop the run (``raise``).
        pin_memory: pin batches for fast transfer; ``None``: when CUDA is available.
        persistent_workers: keep workers between epochs; ``None``: whenever there are workers.
        normalize: intensity statistics the images are normalised with, ``{mean: [...], std: [...]}`` with
            one value per fed channel (``len == len(channels)``), in units of intensity / 255 (as
            ``albumentations.Normalize``). ``None``: the ImageNet statistics of the chosen channels. The
            ``tumorlab`` command fills it from the network's declared preprocessing before ``setup`` (and
            saves it in config.yaml); ``set_normalization`` does the same from Python.
        predict_split: what ``tumorlab predict`` (``predict_dataloader``) covers: one split, or ``all`` for
            train, val and test in turn. Every sample carries its own split's name (``split``); training
            images are not augmented there.
        test_group_by: hold out one group of samples as the test set (leave-one-group-out, e.g. one site):
            ``institution`` for LGG data (the ``TCGA_<institution>_`` part of the patient id, or a column of
            its ``data.csv``), any column for a manifest. Train and val are drawn from the other groups.
        test_group: the value of ``test_group_by`` that is held out (e.g. ``HT``); give both or neither.
    """

    num_classes: int
    class_names: list[str]
    with_mask: bool = False
    mask_channels: int = 1  # channels of ``mask``: 1 tumour mask; volumes: one per region of the label map

    def __init__(
        self,
        image_size: int = 128,
        batch_size: int = 16,
        num_workers: int | None = None,
        channels: list[int] | None = None,
        split: tuple[float, float, float] = (0.7, 0.15, 0.15),
        num_folds: int | None = None,
        fold: int = 0,
        seed: int = 42,
        augment: dict | None = None,
        brain_crop: bool = False,
        cache: Literal["memory", "disk", "none"] = "memory",
        cache_dir: str | None = None,
        weighted_sampler: bool = False,
        on_bad_file: Literal["raise", "skip"] = "raise",
        duplicates: Literal["exact", "near", "none"] = "exact",
        near_threshold: int = DEFAULT_NEAR_THRESHOLD,
        test_duplicates: Literal["drop", "raise"] = "drop",
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        normalize: dict | None = None,
        predict_split: Literal["train", "val", "test", "all"] = "test",
        test_group_by: str | None = None,
        test_group: str | None = None,
    ) -> None:
        super().__init__()
        if hasattr(self, "save_hyperparameters"):  # the Lightning DataModule (tumorlab.data.modules)
            self.save_hyperparameters()
        channels = [0, 1, 2] if channels is None else list(channels)
        check_settings(
            image_size,
            batch_size,
            channels,
            num_folds,
            fold,
            near_threshold,
            (test_group_by, test_group),
            cache=cache,
            on_bad_file=on_bad_file,
            duplicates=duplicates,
            test_duplicates=test_duplicates,
            predict_split=predict_split,
        )
        check_augment(augment)
        self.image_size, self.batch_size, self.channels, self.brain_crop = image_size, batch_size, channels, brain_crop
        self.split, self.num_folds, self.fold, self.seed = tuple(split), num_folds, fold, seed
        self.augment, self.cache, self.cache_dir = augment, cache, cache_dir
        self.weighted_sampler, self.on_bad_file = weighted_sampler, on_bad_file
        self.duplicates, self.near_threshold, self.test_duplicates = duplicates, near_threshold, test_duplicates
        self.predict_split = predict_split
        self.test_group_by, self.test_group = test_group_by, None if test_group is None else str(test_group)
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = self.num_workers > 0 if persistent_workers is None else persistent_workers
        self.in_channels = len(channels)
        self.samples: list[Sample] = []
        self.skipped_files: list[tuple[str, str]] = []  # files the scan passed over (not images, hidden ...)
        self.bad_files: list[tuple[str, str]] = []  # files skipped in setup with on_bad_file=skip
        self.dropped_test_duplicates: list[tuple[str, str]] = []  # (training file, its copy in the test set)
        self.datasets: dict[str, SampleDataset] = {}
        self.infos: list[SampleInfo] = []
        self._spec: tuple | None = None  # the settings the datasets were built with
        self._inspected: DecodeSpec | None = None
        self._cache: DecodeCache | None = None
        self._hashed = False  # whether the last inspection computed perceptual hashes
        self._normalization: dict | None = None  # set by `normalize` or set_normalization; None: ImageNet
        if normalize is not None:
            if not isinstance(normalize, Mapping) or set(normalize) != {"mean", "std"}:
                raise ConfigError(f"data.normalize must be {{mean: [...], std: [...]}} or null, got {normalize!r}")
            self.set_normalization(normalize["mean"], normalize["std"], source="data.normalize")

    # --- hooks for subclasses -------------------------------------------------------------------------

    def sample_labels(self, infos: list[SampleInfo]) -> np.ndarray:
        """The class index of every sample (LGG derives it from the mask)."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def strata(self, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """What the split stratifies by, per sample: the class, unless a subclass knows better."""
        return labels

    def group_values(self, key: str) -> list[str]:
        """The value of ``key`` for every sample (``data.test_group_by``); data without groups refuses."""
        raise ConfigError(
            f"data.test_group_by {key!r}: {type(self).__name__} has no per-sample groups (LGG data has "
            "'institution', a manifest any column)"
        )

    # --- setup ----------------------------------------------------------------------------------------

    def decode_spec(self) -> DecodeSpec:
        """What the cache holds for the current settings; a changed spec rebuilds the cache in ``setup``."""
        return DecodeSpec(self.image_size, tuple(self.channels), bool(self.brain_crop))

    def inspect(self, perceptual_hashes: bool = False) -> None:
        """The pass over every file (hash, decode check, cache fill) and duplicate grouping; ``setup`` runs it.

        Sets ``infos`` (one ``SampleInfo`` per sample), ``bad_files``, ``keep``, ``labels`` and
        ``duplicate_ids``. Runs again only when the decode spec changed or hashes are asked for that the
        last pass did not compute.

        Args:
            perceptual_hashes: compute every image's perceptual hash (``SampleInfo.phash``) even where
                ``duplicates`` is not ``near`` (``tumorlab audit`` reports near-duplicates of any data).
        """
        spec = self.decode_spec()
        phash = perceptual_hashes or self.duplicates == "near"
        if self._inspected == spec and (self._hashed or not phash):
            return
        self._cache = None if self.cache == "none" else DecodeCache(self.samples, spec, self.cache, self.cache_dir)
        # decode every file in every cache mode: a corrupt file must stop here, not in a loader worker
        infos = inspect_samples(self.samples, decode=True, phash=phash, cache=self._cache)
        self.infos = infos
        self.keep = self._handle_bad_files(infos)
        self.labels = self.sample_labels(infos)
        self.duplicate_labels, self.duplicate_ids = duplicate_groups(
            [x.sha256 for x in infos], self.keep, self.duplicates, [x.phash for x in infos], self.near_threshold
        )
        self._inspected, self._hashed = spec, phash

    def setup(self, stage: str | None = None) -> None:
        """Inspect and cache every file, group duplicates, split, and build the train/val/test datasets."""
        spec = self.decode_spec()
        norm = self.normalization
        check_normalization(norm["mean"], norm["std"], self.channels, norm["source"])  # channels may have changed
        stats = (tuple(norm["mean"]), tuple(norm["std"]))
        state = (spec, self.split, self.num_folds, self.fold, self.seed, repr(self.augment), stats, self.test_group)
        if self.datasets and state == self._spec:
            return
        self.inspect()
        labels, dup, keep = self.labels, self.duplicate_ids, self.keep
        patients = [s.patient or dup[i] for i, s in enumerate(self.samples)]
        fixed = np.array([s.fixed_split or "" for s in self.samples])
        if self.test_group_by is not None:
            fixed = self._group_as_test(fixed, patients, keep)
        paths = [str(s.image) for s in self.samples]
        keep, self.dropped_test_duplicates = apply_test_duplicates(dup, fixed, keep, paths, self.test_duplicates)
        self.split_indices = assign_splits(
            patients,
            dup,
            keep,
            self.strata(labels, keep),
            fixed,
            self.split,
            self.seed,
            num_folds=self.num_folds,
            fold=self.fold,
        )
        self.store = SampleStore(self.samples, labels, spec, self._cache)
        self.datasets = {
            name: SampleDataset(
                self.store,
                self.split_indices[name],
                build_transforms(name == "train", self.augment, norm["mean"], norm["std"]),
                self.with_mask,
                patients,
                split=name,
                mask_channels=self.mask_channels,
            )
            for name in SPLITS
        }
        if getattr(self, "task", None) != "segmentation":  # a segmenter may train on tumour slices only
            where = getattr(self, "root", None) or getattr(self, "csv", None) or type(self).__name__
            check_split_classes({n: ds.labels for n, ds in self.datasets.items()}, self.class_names, str(where))
        self._spec = state
        log.info("%s split: %s; normalisation: %s", type(self).__name__, self.describe_splits(), norm)

    def _group_as_test(self, fixed: np.ndarray, patients: list[str], keep: np.ndarray) -> np.ndarray:
        """``fixed`` with the samples of ``test_group`` marked ``test`` (``splits.held_out_group``)."""
        if (fixed != "").any():
            raise ConfigError(
                f"data.test_group_by {self.test_group_by!r} holds out a group as the test set, but the data fixes "
                "its own (test_root, a Testing/ folder or a split column); use one of them"
            )
        values = self.group_values(self.test_group_by)
        test = held_out_group(values, patients, keep, self.test_group_by, self.test_group)
        return np.where(test, "test", "")

    def _handle_bad_files(self, infos: list[SampleInfo]) -> np.ndarray:
        bad = [(str(s.image), x.error) for s, x in zip(self.samples, infos, strict=True) if x.error]
        if bad and self.on_bad_file == "raise":
            more = f" (and {len(bad) - 1} more bad files; on_bad_file: skip leaves them out)" if len(bad) > 1 else ""
            raise DataError(bad[0][1] + more)
        self.bad_files = bad
        if bad:
            log.warning("skipped %d bad files (on_bad_file: skip); first: %s", len(bad), bad[0][1])
        return np.array([x.error is None for x in infos], dtype=bool)

    # --- normalisation --------------------------------------------------------------------------------

    @property
    def normalization(self) -> dict:
        """What the datasets normalise with: ``{mean: [...], std: [...], source: ...}``, one value per fed channel."""
        if self._normalization is not None:
            given = self._normalization
            return {"mean": list(given["mean"]), "std": list(given["std"]), "source": given["source"]}
        mean, std = imagenet_statistics(self.channels)
        return {"mean": mean, "std": std, "source": "ImageNet statistics (data.normalize: null)"}

    def set_normalization(self, mean: Sequence[float], std: Sequence[float], source: str = "") -> None:
        """Normalise with ``mean`` and ``std`` (one value per fed channel, intensity / 255) from the next ``setup``.

        Call it before ``setup``; datasets already built are rebuilt by the next ``setup``. ``source`` says
        where the statistics come from (e.g. the network's preprocessing) for logs and ``normalization``.
        """
        mean, std = check_normalization(mean, std, self.channels, source)
        self._normalization = {"mean": mean, "std": std, "source": source}
        if hasattr(self, "hparams"):  # the Lightning DataModule: what a checkpoint records
            self.hparams["normalize"] = {"mean": list(mean), "std": list(std)}

    # --- what the tasks use ---------------------------------------------------------------------------

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError(f"{type(self).__name__}.setup() must run first")

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Samples per class in ``split`` (after ``setup``)."""
        self._require_setup()
        return np.bincount(self.datasets[split].labels, minlength=self.num_classes)

    def class_weights(self) -> torch.Tensor:
        """Inverse class frequency in the training split, normalised to mean 1 (for a weighted loss)."""
        counts = self.class_counts("train")
        if (counts == 0).any():
            missing = [self.class_names[c] for c in np.flatnonzero(counts == 0)]
            raise DataError(f"no training samples of class {', '.join(missing)}; class weights are undefined")
        weights = counts.sum() / (len(counts) * counts)
        return torch.tensor(weights / weights.mean(), dtype=torch.float32)

    def split_patients(self, name: str) -> list[str]:
        """Sorted patient ids (or duplicate-group ids) of split ``name`` (after ``setup``)."""
        self._require_setup()
        ds = self.datasets[name]
        return sorted({ds.patients[i] for i in ds.indices})

    def describe_splits(self) -> dict[str, dict]:
        """Samples, patients and per-class counts of each split."""
        return {
            name: {
                "samples": len(ds),
                "patients": len(self.split_patients(name)),
                "classes": dict(Counter(self.class_names[c] for c in ds.labels)),
            }
            for name, ds in self.datasets.items()
        }

    def _loader(self, name: str, train: bool) -> DataLoader:
        self._require_setup()
        return make_loader(
            self.predict_dataset() if name == "predict" else self.datasets[name],
            train,
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
            weighted_classes=self.num_classes if self.weighted_sampler else None,
            trainer=getattr(self, "trainer", None),  # set by Lightning on the DataModule (tumorlab.data.modules)
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataset(self) -> Dataset:
        """The samples ``predict_dataloader`` serves (``loaders.predict_dataset``: the ``predict_split``, or all
        three in turn, normalised only, each item tagged with its ``split``)."""
        self._require_setup()
        return predict_dataset(self.datasets, self.predict_split)

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_dataset()`` in order, each sample on one process only under DDP."""
        return self._loader("predict", train=False)
