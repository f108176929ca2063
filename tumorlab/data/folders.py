"""Class-folder data sets: one folder of images per class, optionally under ``Training/`` and ``Testing/``.

Both public namings of the 4-class brain-MRI sets read the same: ``glioma_tumor`` and ``glioma`` are
``glioma``, ``no_tumor``/``notumor``/``no_tumour`` are ``no_tumour`` and so on (``canonical_class``).
There are no patient ids, so exact and near-duplicate images form the groups that splits keep together.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from tumorlab.data.base import TumorData
from tumorlab.data.cache import Sample
from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD
from tumorlab.data.io import IMAGE_SUFFIXES
from tumorlab.data.lgg import holds_lgg_slices
from tumorlab.errors import ConfigError, DataError

__all__ = [
    "CLASS_ALIASES",
    "canonical_class",
    "check_model_classes",
    "resolve_roots",
    "scan_class_folders",
    "FolderData",
]

log = logging.getLogger(__name__)

# Folder name (lower case, spaces and hyphens as "_") -> the class name tumorlab uses.
CLASS_ALIASES = {
    **dict.fromkeys(("glioma", "glioma_tumor", "glioma_tumour", "gliomas"), "glioma"),
    **dict.fromkeys(("meningioma", "meningioma_tumor", "meningioma_tumour", "meningiomas"), "meningioma"),
    **dict.fromkeys(("pituitary", "pituitary_tumor", "pituitary_tumour", "pituitary_adenoma"), "pituitary"),
    **dict.fromkeys(("no_tumour", "no_tumor", "notumor", "notumour", "no", "normal", "healthy"), "no_tumour"),
    **dict.fromkeys(("tumour", "tumor", "yes"), "tumour"),
}
_EXPECTED = (
    "one folder of images per class (glioma, meningioma, no_tumour, pituitary or their aliases such as "
    "glioma_tumor, notumor), optionally under Training/ and Testing/"
)


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def canonical_class(name: str, extra: tuple[str, ...] = ()) -> str | None:
    """tumorlab's name for a class folder (``Glioma_Tumor`` -> ``glioma``); ``extra`` adds custom classes."""
    key = _key(name)
    return CLASS_ALIASES.get(key) or (key if key in extra else None)


def resolve_roots(root: str | Path) -> tuple[Path, Path | None]:
    """``(training folder, testing folder or None)`` of a download: ``root/Training`` + ``root/Testing`` where
    they exist (also ``train``/``test``, any case), else ``root`` itself and no test folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder; expected {_EXPECTED}")
    subs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    train = subs.get("training") or subs.get("train")
    if train is None:
        return root, None
    return train, subs.get("testing") or subs.get("test")


def scan_class_folders(root: Path, classes: list[str] | None, skipped: list[tuple[str, str]]) -> dict[str, list[Path]]:
    """Image files per class under ``root`` (sorted), checking folder names and emptiness.

    Args:
        root: a folder of class folders.
        classes: the classes to read (canonical names or custom ones); others are passed over and listed in
            ``skipped``. ``None`` reads every known class.
        skipped: receives ``(path, reason)`` for every file passed over (not an image, hidden, not in a
            class folder, class not selected).
    """
    extra = tuple(classes or ())
    found: dict[str, list[Path]] = {}
    folders: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            skipped.append((str(entry), "hidden"))
            continue
        if not entry.is_dir():
            skipped.append((str(entry), "not inside a class folder"))
            continue
        name = canonical_class(entry.name, extra)
        if name is None:
            raise DataError(
                f"{entry}: unknown class folder {entry.name!r}; expected {_EXPECTED}, "
                "or name it in data.classes to read it as a class of its own"
            )
        if name in folders:
            raise DataError(f"{entry} and {folders[name]} are both class {name!r}; keep one of them")
        folders[name] = entry
        files = sorted(p for p in entry.rglob("*") if p.is_file())
        if classes is not None and name not in classes:
            skipped += [(str(p), f"class {name} not in data.classes") for p in files]
            continue
        images = []
        for p in files:
            if any(part.startswith(".") for part in p.relative_to(entry).parts):
                skipped.append((str(p), "hidden"))
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(p)
            else:
                skipped.append((str(p), f"not an image file ({p.suffix or 'no extension'})"))
        if not images:
            raise DataError(f"{entry}: class folder {entry.name!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        found[name] = images
    if not found:
        raise DataError(f"data root {root} holds no images; expected {_EXPECTED}")
    return found


def check_model_classes(model: list[str], found: list[str], binary: bool, roots: tuple) -> None:
    """Stop (``DataError``, both class lists) where the data holds a class that the model never saw.

    With ``binary`` every class of the data is scored as ``no_tumour`` or ``tumour``, so any class is
    accepted, but the model needs a ``no_tumour`` class and another one.
    """
    if binary:
        if "no_tumour" not in model or len(model) < 2:
            raise ConfigError(f"data.binary scores no_tumour against the tumour classes; the model's are {model}")
        return
    where = " and ".join(str(r) for r in roots if r is not None)
    unseen = [c for c in found if c not in model]
    if unseen:
        hint = " (--data.binary true scores tumour / no tumour)" if "tumour" in unseen else ""
        raise DataError(
            f"{where}: class {', '.join(unseen)} of the test data is not a class of the model; model classes: "
            f"{', '.join(model)}; data classes: {', '.join(found)}{hint}"
        )


def _folder_names(files: dict[str, list[Path]], roots: tuple) -> dict[str, list[str]]:
    """The class folders (as named on disk) that each class was read from."""
    out = {}
    for name, paths in files.items():
        folders = set()
        for p in paths:
            for root in roots:
                if root is not None and p.is_relative_to(root):
                    folders.add(p.relative_to(root).parts[0])
        out[name] = sorted(folders)
    return out


class FolderData(TumorData):
    """Images in class folders (e.g. the 4-class brain-MRI downloads), for classification.

    Args:
        root: a folder of class folders, or a download holding ``Training/`` (and ``Testing/``, which then
            becomes the test split).
        classes: the classes to use and their order (their indices are the labels), by canonical name or any
            alias (``[glioma, meningioma, pituitary, no_tumour]``); ``None``: every class found, sorted.
        binary: collapse to ``[no_tumour, tumour]`` (every tumour class is ``tumour``).
        test_root: a folder of class folders (or a download with ``Testing/``) that forms the test split, for
            cross-data-set evaluation; replaces ``root``'s own ``Testing/``. Training images with a copy in it
            are dropped from training by default (``test_duplicates``).
        image_size: side in pixels that images are resized to.
        batch_size: images per batch.
        duplicates: default ``near``: byte-identical and perceptually near-identical images are grouped.
        near_threshold: perceptual-hash bits (of 256) within which two images count as the same.
        model_classes: the classes of the trained model that this data is evaluated with (``tumorlab test
            --ckpt_path RUN`` sets them from the run): labels are indices into them (with ``binary``, into
            ``[no_tumour, tumour]``), classes the data lacks stay empty, and a class of the data that is not
            one of them stops here with both lists. ``model_num_classes`` keeps their number: the width of
            the model's head, which stays as trained even where ``binary`` scores it as two classes.
        **kwargs: the shared options of ``TumorDataModule`` (``base.TumorData``).

    Without a test folder, train/val/test are drawn from ``root`` by ``split``, stratified by class, with
    duplicate groups kept whole. Batches carry the duplicate-group id as ``patient``.
    """

    split_units = ("images", "duplicate groups")  # what the split line of fit counts: samples, groups kept whole

    def __init__(
        self,
        root: str,
        classes: list[str] | None = None,
        binary: bool = False,
        test_root: str | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        duplicates: Literal["exact", "near", "none"] = "near",
        near_threshold: int = DEFAULT_NEAR_THRESHOLD,
        model_classes: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            image_size=image_size, batch_size=batch_size, duplicates=duplicates, near_threshold=near_threshold, **kwargs
        )
        self.root, self.binary, self.test_root = root, binary, test_root
        self.model_classes = None if model_classes is None else [canonical_class(c) or _key(c) for c in model_classes]
        self.model_num_classes = None if model_classes is None else len(model_classes)
        wanted = None if classes is None else [canonical_class(c) or _key(c) for c in classes]
        if wanted is not None and (not wanted or len(set(wanted)) != len(wanted)):
            raise ConfigError(f"data.classes must name distinct classes, got {classes}")
        train_dir, test_dir = resolve_roots(root)
        if test_root is not None:
            if test_dir is not None:
                log.info("test_root is given: %s is not used", test_dir)
                self.skipped_files.append((str(test_dir), "replaced by test_root"))
            test_dir = resolve_roots(test_root)[1] or Path(test_root)
            if holds_lgg_slices(test_root):
                raise DataError(
                    f"data.test_root {test_root} is LGG kaggle_3m data but data.root {root} is class folders; a "
                    f"test root must have the root's layout ({_EXPECTED})"
                )
        self.train_dir, self.test_dir = train_dir, test_dir
        train = scan_class_folders(train_dir, wanted, self.skipped_files)
        test = {} if test_dir is None else scan_class_folders(test_dir, wanted, self.skipped_files)
        found = wanted or sorted(train)
        missing = [c for c in found if c not in train]
        if missing:
            raise DataError(f"data root {train_dir}: no class folder for {', '.join(missing)} (data.classes)")
        unknown_test = sorted(set(test) - set(found))
        if unknown_test:
            raise DataError(f"test folder {test_dir}: classes {unknown_test} do not occur in {train_dir}")
        self.folder_classes = found
        files = {c: train.get(c, []) + test.get(c, []) for c in found}
        self.class_folders = _folder_names(files, (train_dir, test_dir))
        if self.model_classes is not None:
            check_model_classes(self.model_classes, found, binary, (train_dir, test_dir))
        if binary:
            if "no_tumour" not in found or len(found) < 2:
                raise ConfigError(f"data.binary needs a no_tumour class and a tumour class, found {found}")
            self.class_names = ["no_tumour", "tumour"]
            index = {c: int(c != "no_tumour") for c in found}
        else:
            self.class_names = list(self.model_classes or found)
            index = {c: self.class_names.index(c) for c in found}
        self.num_classes = len(self.class_names)
        self.samples = [Sample(p, index[c], "", source="train") for c in found for p in train[c]]
        self.samples += [
            Sample(p, index[c], "", fixed_split="test", source="test") for c in found for p in test.get(c, [])
        ]
        notable = [(p, why) for p, why in self.skipped_files if why != "hidden" and "data.classes" not in why]
        if notable:
            log.warning("passed over %d files (first: %s: %s); `tumorlab audit` lists them", len(notable), *notable[0])
