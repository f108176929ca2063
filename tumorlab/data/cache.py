"""Decode once: one pass over every file that hashes, checks and decodes it, and a cache of the results.

``inspect_samples`` reads each file once (threads: OpenCV decoding and hashing release the GIL), takes its
SHA-256, decodes it, records its size and mode, its perceptual hash (for near-duplicates) and its mask's
tumour pixels, and stores the prepared (cropped, resized) arrays in a ``DecodeCache``. It runs in
``setup()`` in the main process, so bad files are found before training starts and DataLoader workers,
forked later, only read finished arrays: no epoch decodes a JPEG or TIFF again.

The cache lives in memory (a numpy array) or on disk (``.npy`` files used through ``numpy.memmap``, for
data larger than memory). An on-disk cache is named by a fingerprint of the decode spec (image size,
channels, crop) and of every file's path, size and modification time, so it is reused by later runs on
unchanged files and never served for changed files or settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tumorlab.data.duplicates import phash_bits
from tumorlab.data.io import decode_image, image_mode, read_bytes, read_mask, to_rgb
from tumorlab.data.transforms import DecodeSpec, prepare
from tumorlab.errors import DataError

__all__ = ["Sample", "SampleInfo", "DecodeCache", "inspect_samples", "load_sample", "default_cache_dir"]

log = logging.getLogger(__name__)

CacheKind = Literal["memory", "disk", "none"]
_FORMAT = 1  # bump when what the cache stores changes


@dataclass(frozen=True)
class Sample:
    """One image of a data set: its file, class, patient and, for segmentation data, its mask file.

    ``label`` is -1 where it is derived later (LGG: from the mask). ``patient`` is ``""`` where the data has
    no patient ids (class folders: the duplicate group stands in). ``fixed_split`` is set where the data
    itself fixes the split (a ``Testing/`` root, a manifest's ``split`` column). ``source`` names the root.
    """

    image: Path
    label: int
    patient: str
    mask: Path | None = None
    fixed_split: str | None = None
    source: str = ""
    index: int = 0


@dataclass
class SampleInfo:
    """What one pass over a file found: hash, size, mode, tumour pixels, or the error that stopped it."""

    sha256: str | None = None
    phash: str | None = None  # hex of the 256-bit perceptual hash
    height: int = 0
    width: int = 0
    mode: str = ""
    mask_pixels: int | None = None
    error: str | None = None


def default_cache_dir() -> Path:
    """``$TUMORLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/tumorlab``, else ``~/.cache/tumorlab``."""
    if value := os.environ.get("TUMORLAB_CACHE_DIR"):
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tumorlab"


def _stat(path: Path | None) -> list:
    if path is None:
        return [None]
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


class DecodeCache:
    """Prepared ``uint8`` images ``(N, S, S, C)`` and masks ``(N, S, S)``, in memory or in memory-mapped files.

    Args:
        samples: the files, in the order of the cache's slots.
        spec: what a slot holds; part of the on-disk name, so changed settings never read old slots.
        kind: ``memory`` or ``disk``.
        directory: folder of on-disk caches (default ``default_cache_dir()``).
    """

    def __init__(self, samples: list[Sample], spec: DecodeSpec, kind: CacheKind, directory: str | None = None):
        if kind not in ("memory", "disk"):
            raise ValueError(f"cache kind must be memory or disk, got {kind!r}")
        self.spec, self.kind, self.n = spec, kind, len(samples)
        self.has_masks = any(s.mask is not None for s in samples)
        size, channels = spec.image_size, len(spec.channels)
        self.image_shape = (self.n, size, size, channels)
        self.mask_shape = (self.n, size, size)
        self.infos: list[SampleInfo] | None = None  # set when a finished on-disk cache is reused
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        if kind == "memory":
            self._images = np.zeros(self.image_shape, np.uint8)
            self._masks = np.zeros(self.mask_shape, np.uint8) if self.has_masks else None
            return
        digest = hashlib.sha256(
            json.dumps([_FORMAT, spec.key(), [_stat(s.image) + _stat(s.mask) for s in samples]]).encode()
        ).hexdigest()[:24]
        self.directory = Path(directory) if directory else default_cache_dir()
        self.stem = self.directory / f"{spec.key()}_{digest}"
        meta = self.stem.with_suffix(".json")
        if meta.is_file():
            self.infos = [SampleInfo(**row) for row in json.loads(meta.read_text())["infos"]]
            self._open("r")
            log.info("decode cache: reusing %s (%d images)", meta, self.n)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._open("w+", suffix=f".partial{os.getpid()}")

    @property
    def complete(self) -> bool:
        """True for an on-disk cache that earlier runs filled: no file needs decoding."""
        return self.infos is not None

    def _paths(self, suffix: str = "") -> tuple[Path, Path]:
        return Path(f"{self.stem}{suffix}.images.npy"), Path(f"{self.stem}{suffix}.masks.npy")

    def _open(self, mode: str, suffix: str = "") -> None:
        images, masks = self._paths(suffix)
        open_memmap = np.lib.format.open_memmap
        self._images = open_memmap(images, mode=mode, dtype=np.uint8, shape=self.image_shape if mode != "r" else None)
        if self.has_masks:
            self._masks = open_memmap(masks, mode=mode, dtype=np.uint8, shape=self.mask_shape if mode != "r" else None)

    def put(self, i: int, image: np.ndarray, mask: np.ndarray | None) -> None:
        """Store the prepared arrays of slot ``i``."""
        self._images[i] = image
        if self._masks is not None and mask is not None:
            self._masks[i] = mask

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Copies of the arrays of slot ``i`` (the transforms may write into what they get)."""
        if self._images is None:  # a worker process that received a pickled on-disk cache
            self._open("r")
        image = np.array(self._images[i])
        return image, (None if self._masks is None else np.array(self._masks[i]))

    def finish(self, infos: list[SampleInfo]) -> None:
        """Seal an on-disk cache: flush, move the files to their final names, write the info file last."""
        if self.kind != "disk" or self.complete:
            return
        partial = self._paths(f".partial{os.getpid()}")
        for array in (self._images, self._masks):
            if array is not None:
                array.flush()
        self._images = self._masks = None
        for src, dst in zip(partial, self._paths(), strict=True):
            if src.exists():
                os.replace(src, dst)
        tmp = self.stem.with_suffix(f".json.partial{os.getpid()}")
        tmp.write_text(json.dumps({"spec": asdict(self.spec), "infos": [asdict(x) for x in infos]}))
        os.replace(tmp, self.stem.with_suffix(".json"))
        self.infos = infos
        self._open("r")
        log.info("decode cache: wrote %s.*", self.stem)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.kind == "disk":  # workers reopen the files instead of receiving a copy of the data
            state["_images"] = state["_masks"] = None
        return state


def load_sample(sample: Sample, spec: DecodeSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode and prepare one sample without the cache (``cache: none``)."""
    data = read_bytes(sample.image)
    rgb = to_rgb(decode_image(data, sample.image), sample.image)
    mask = None if sample.mask is None else read_mask(sample.mask)
    _check_mask(sample, rgb, mask)
    return prepare(rgb, mask, spec)


def _check_mask(sample: Sample, rgb: np.ndarray, mask: np.ndarray | None) -> None:
    if mask is not None and mask.shape != rgb.shape[:2]:
        raise DataError(
            f"{sample.mask}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
            f"{sample.image.name} ({rgb.shape[1]}x{rgb.shape[0]})"
        )


def _inspect_one(
    sample: Sample, i: int, decode: bool, phash: bool, spec: DecodeSpec | None, cache: DecodeCache | None
) -> SampleInfo:
    info = SampleInfo()
    try:
        data = read_bytes(sample.image)
        info.sha256 = hashlib.sha256(data).hexdigest()
        mask = None if sample.mask is None else read_mask(sample.mask)
        info.mask_pixels = None if mask is None else int(mask.sum())
        if decode or phash or cache is not None:
            raw = decode_image(data, sample.image)
            info.height, info.width, info.mode = raw.shape[0], raw.shape[1], image_mode(raw)
            rgb = to_rgb(raw, sample.image)
            _check_mask(sample, rgb, mask)
            if phash:
                info.phash = phash_bits(rgb).tobytes().hex()
            if cache is not None:
                cache.put(i, *prepare(rgb, mask, spec))
    except DataError as err:
        info.error = str(err)
    return info


def inspect_samples(
    samples: list[Sample],
    decode: bool = True,
    phash: bool = False,
    cache: DecodeCache | None = None,
    threads: int | None = None,
) -> list[SampleInfo]:
    """One pass over ``samples``: hash every file, and decode, perceptual-hash and cache where asked.

    Errors do not stop the pass: each ``SampleInfo.error`` holds the ``DataError`` message of its file,
    for the caller to raise or skip. A finished on-disk ``cache`` returns its stored infos at once.
    """
    if cache is not None and cache.complete:
        if not phash or all(x.phash or x.error for x in cache.infos):
            return cache.infos
        return inspect_samples(samples, decode, phash, None, threads)  # the arrays are there; hash again
    spec = cache.spec if cache is not None else None
    threads = threads or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        infos = list(pool.map(lambda i: _inspect_one(samples[i], i, decode, phash, spec, cache), range(len(samples))))
    elapsed = time.perf_counter() - start
    log.info("read %d files in %.1f s (%.0f files/s)", len(samples), elapsed, len(samples) / max(elapsed, 1e-9))
    if cache is not None:
        cache.finish(infos)
    return infos
