"""What every tumorlab DataModule shares: the decode pass and cache, duplicate groups, leak-proof splits,
class weights, the weighted sampler and the loaders (a ``SeededSampler`` for training, so that a resumed fit
sees the batches an uninterrupted one would).

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
   ``splits.drop_test_duplicates``) or raise;
4. the split (hold-out fractions or k-fold, stratified) is drawn and verified by ``check_disjoint``;
5. the datasets normalise with ``normalization`` (the model's statistics, or ImageNet's by default).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from tumorlab.data.cache import DecodeCache, Sample, SampleInfo, inspect_samples
from tumorlab.data.checks import check_split_classes
from tumorlab.data.dataset import SampleDataset, SampleStore
from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD, duplicate_groups
from tumorlab.data.samplers import SeededSampler
from tumorlab.data.splits import (
    SPLITS,
    check_disjoint,
    drop_test_duplicates,
    held_out_group,
    make_splits,
    split_units,
)
from tumorlab.data.transforms import (
    DecodeSpec,
    build_transforms,
    check_augment,
    check_normalization,
    imagenet_statistics,
)
from tumorlab.data.workers import NamingDataLoader, TrackedDataset
from tumorlab.errors import ConfigError, DataError

__all__ = ["TumorData", "default_workers"]

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Loader processes for this machine: none on 1-2 cores (the main process keeps up with a cached data
    set and worker start-up costs more than it saves), else up to 4, leaving a core to the model."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(4, cpus - 1)


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
        if image_size < 8:
            raise ConfigError(f"data.image_size must be at least 8 pixels, got {image_size}")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
        if not channels or len(set(channels)) != len(channels) or not set(channels) <= {0, 1, 2}:
            raise ConfigError(f"data.channels must be distinct indices among 0, 1, 2, got {channels}")
        if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
            raise ConfigError(f"data.num_folds must be >= 2 and data.fold in [0, num_folds), got {num_folds}, {fold}")
        if not 0 <= near_threshold <= 256:
            raise ConfigError(f"data.near_threshold must lie in [0, 256] bits, got {near_threshold}")
        for key, value, allowed in (
            ("cache", cache, ("memory", "disk", "none")),
            ("on_bad_file", on_bad_file, ("raise", "skip")),
            ("duplicates", duplicates, ("exact", "near", "none")),
            ("test_duplicates", test_duplicates, ("drop", "raise")),
            ("predict_split", predict_split, (*SPLITS, "all")),
        ):
            if value not in allowed:
                raise ConfigError(f"data.{key} must be one of {list(allowed)}, got {value!r}")
        check_augment(augment)
        self.image_size, self.batch_size, self.channels, self.brain_crop = image_size, batch_size, channels, brain_crop
        self.split, self.num_folds, self.fold, self.seed = tuple(split), num_folds, fold, seed
        self.augment, self.cache, self.cache_dir = augment, cache, cache_dir
        self.weighted_sampler, self.on_bad_file = weighted_sampler, on_bad_file
        self.duplicates, self.near_threshold, self.test_duplicates = duplicates, near_threshold, test_duplicates
        self.predict_split = predict_split
        if (test_group_by is None) != (test_group is None):
            raise ConfigError(
                f"data.test_group_by and data.test_group go together (the key and the held-out value), got "
                f"{test_group_by!r} and {test_group!r}"
            )
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
        keep = self._drop_test_duplicates(dup, fixed, keep)
        idx = np.flatnonzero(keep)
        units = split_units([patients[i] for i in idx], [dup[i] for i in idx])
        strata = self.strata(labels, keep)[idx]
        given = {name: np.flatnonzero(fixed[idx] == name) for name in SPLITS}
        if self.num_folds is None and sum(len(v) for v in given.values()) == len(idx) and all(map(len, given.values())):
            local = given  # the data fixes all three splits (a manifest's split column)
            check_disjoint(local, units)
        else:
            local = make_splits(
                units,
                self.split,
                self.seed,
                strata=strata,
                fixed_test=(fixed[idx] == "test") if (fixed[idx] == "test").any() else None,
                num_folds=self.num_folds,
                fold=self.fold,
            )
        check_disjoint(local, [patients[i] for i in idx])
        check_disjoint(local, [dup[i] for i in idx], what="duplicate-image")
        self.split_indices = {name: idx[part] for name, part in local.items()}
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

    def _drop_test_duplicates(self, dup: list[str], fixed: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Apply ``test_duplicates`` to the training copies of test images: raise, or drop and report them."""
        kept, leaked = drop_test_duplicates(dup, fixed, keep)
        pairs = [(str(self.samples[i].image), str(self.samples[j].image)) for i, j in leaked]
        if leaked and self.test_duplicates == "raise":
            listing = "; ".join(f"{a} = {b}" for a, b in pairs[:5])
            raise DataError(
                f"{len(pairs)} training images have a copy in the test set: {listing}"
                + (" ..." if len(pairs) > 5 else "")
                + " (test_duplicates: drop removes them from training)"
            )
        self.dropped_test_duplicates = pairs
        if leaked:
            log.warning("dropped %d training images that duplicate test images (test_duplicates: drop)", len(pairs))
        return kept

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
        ds = self.predict_dataset() if name == "predict" else self.datasets[name]
        trainer = getattr(self, "trainer", None)  # set by Lightning on the DataModule (tumorlab.data.modules)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = None
        if train:
            weights = None
            if self.weighted_sampler:
                counts = np.bincount(ds.labels, minlength=self.num_classes).astype(np.float64)
                weights = (1.0 / counts[ds.labels]).tolist()
            # Order and augmentation follow (seed, epoch) only: reproducible, resumable, sharded under DDP.
            sampler = SeededSampler(ds, seed=self.seed, num_replicas=world, rank=rank, weights=weights)
        elif world > 1:
            # Lightning's default DistributedSampler pads evaluation sets with repeated samples; this one gives
            # every sample to exactly one process, so metrics synced across processes are exact.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
        # with workers, one that dies names the file it was loading (tumorlab.data.workers)
        tracked = TrackedDataset(ds, self.num_workers) if self.num_workers > 0 else ds
        return (NamingDataLoader if self.num_workers > 0 else DataLoader)(
            tracked,
            batch_size=self.batch_size,
            sampler=sampler,
            # worker seeds come from this generator, not from the global RNG that dropout draws from
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            pin_memory=self.pin_memory,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataset(self) -> Dataset:
        """The samples ``predict_dataloader`` serves: the ``predict_split``, or train, val and test in turn
        (``all``), every one normalised only (training images too), each item tagged with its ``split``."""
        self._require_setup()
        names = SPLITS if self.predict_split == "all" else (self.predict_split,)
        unaugmented = self.datasets["val"].transform  # built with train=False: normalisation only
        parts = [self.datasets[n] if n != "train" else self.datasets[n].with_transform(unaugmented) for n in names]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_dataset()`` in order, each sample on one process only under DDP."""
        return self._loader("predict", train=False)
