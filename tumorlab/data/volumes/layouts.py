"""Where the volumes of each subject are: the datalist JSON, the BraTS, Decathlon and nnU-Net raw layouts, DICOM.

Each reader returns ``Subject`` records (id, one ``Channel`` per modality, the label volume, the class) and the
label map its layout implies; nothing is decoded here. Modality names are canonical (``flair``, ``t1``,
``t1ce``, ``t2``; other names kept lower-cased), so one config reads BraTS 2021 (``flair``), BraTS 2023
(``t2f``), the Decathlon (``FLAIR``) and a datalist alike (``MODALITY_ALIASES``).

- ``datalist``: a JSON file in the Decathlon / MONAI convention, ``{"training": [{"image": [...] | "...",
  "label": "...", "subject": ..., "class": ...}], "validation": [...], "test": [...]}``. File names are free;
  the datalist says which file is which modality: ``image`` is a list in the order of the datalist's
  ``modality`` (or nnU-Net's ``channel_names``) table, a single 4D file whose channels that table names, or a
  ``{modality: path}`` mapping. Paths are relative to the JSON's folder (or ``base``). ``validation`` and
  ``test`` entries fix their split; test entries without a label are passed over (listed) where masks are needed.
- ``brats``: a folder per case, ``<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (2021) or
  ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (2023).
- ``decathlon``: ``imagesTr/<case>.nii.gz`` 4D volumes + ``labelsTr/<case>.nii.gz`` (+ ``dataset.json``).
- ``nnunet``: ``imagesTr/<case>_<0000>.nii.gz`` one file per channel, ``labelsTr/<case>.nii.gz``, ``dataset.json``.
- ``dicom``: a folder tree of DICOM series; a subject is a ``PatientID``, a modality a ``SeriesDescription``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tumorlab.data.volumes.dicom import DicomSeries, scan_dicom
from tumorlab.errors import DataError

__all__ = [
    "LAYOUTS",
    "MODALITY_ALIASES",
    "Channel",
    "Subject",
    "canonical_modality",
    "detect_volume_layout",
    "read_layout",
    "read_class_csv",
]

LAYOUTS = ("datalist", "brats", "decathlon", "nnunet", "dicom")
MODALITY_ALIASES = {
    **dict.fromkeys(("flair", "t2f", "t2flair", "t2-flair", "t2_flair"), "flair"),
    **dict.fromkeys(("t1", "t1n", "t1w", "t1native"), "t1"),
    **dict.fromkeys(("t1ce", "t1c", "t1gd", "t1-gd", "t1_gd", "t1post", "t1+c", "t1wce"), "t1ce"),
    **dict.fromkeys(("t2", "t2w"), "t2"),
}
_BRATS_FILE = re.compile(
    r"^(?P<case>.+?)(?P<sep>[_-])(?P<mod>flair|t1ce|t1|t2|t1n|t1c|t2w|t2f|seg)\.nii(\.gz)?$", re.IGNORECASE
)
_NNUNET_FILE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})\.nii(\.gz)?$")
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Channel:
    """One modality (or the label volume) of a subject: a NIfTI file, a channel of a 4D one, or a DICOM series."""

    path: Path
    index: int | None = None  # channel of a 4D file
    series: DicomSeries | None = None

    def describe(self) -> str:
        """The file (and channel) as error messages name it."""
        return f"{self.path} (channel {self.index})" if self.index is not None else str(self.path)


@dataclass
class Subject:
    """One subject: modality name -> ``Channel``, the label volume, the class name, a split the data fixes."""

    id: str
    images: dict[str, Channel]
    label: Channel | None = None
    class_name: str | None = None
    split: str | None = None
    where: str = ""  # the datalist entry or case folder, for messages
    extra: dict = field(default_factory=dict)


def canonical_modality(name: str) -> str:
    """``T2F`` -> ``flair``, ``t1gd`` -> ``t1ce`` ...; other names lower-cased with spaces as ``_``."""
    key = str(name).strip().lower().replace(" ", "_")
    return MODALITY_ALIASES.get(key, MODALITY_ALIASES.get(key.replace("_", ""), key))


def _stem(path: Path) -> str:
    return _NIFTI.sub("", path.name)


def _in_order(images: dict[str, Channel]) -> dict[str, Channel]:
    """Modalities in the order flair, t1, t1ce, t2, then any others by name (where no table fixes an order)."""
    order = ["flair", "t1", "t1ce", "t2"]
    return dict(sorted(images.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 9, kv[0])))


def _visible(folder: Path) -> list[Path]:
    """Files of ``folder``, sorted, without hidden ones (macOS ``._`` copies ship in the Decathlon archive)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def detect_volume_layout(root: str | Path) -> str | None:
    """``datalist`` (a ``.json`` file), ``nnunet``, ``decathlon``, ``brats`` or ``dicom``; ``None`` if none fits."""
    root = Path(root)
    if root.is_file():
        return "datalist" if root.suffix.lower() == ".json" else None
    if not root.is_dir():
        return None
    images = root / "imagesTr"
    if images.is_dir():
        files = [p for p in _visible(images) if _NIFTI.search(p.name)]
        return "nnunet" if files and all(_NNUNET_FILE.match(p.name) for p in files) else "decathlon"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(_BRATS_FILE.match(f) for f in filenames if not f.startswith(".")):
            return "brats"
        for name in filenames[:3]:
            with open(Path(dirpath) / name, "rb") as f:
                if f.read(132)[128:132] == b"DICM":
                    return "dicom"
    return None


def read_layout(
    root: str | Path,
    layout: str,
    skipped: list[tuple[str, str]],
    base: str | Path | None = None,
    series_modalities: dict[str, str] | None = None,
) -> tuple[list[Subject], str]:
    """The subjects of ``root`` in ``layout`` and the name of the label map the layout implies.

    ``series_modalities`` (DICOM): ``{modality: regular expression}`` searched (case-insensitive) in each
    ``SeriesDescription``; a series that matches none is passed over and listed. ``None``: the description itself,
    made canonical, names the modality.
    """
    root = Path(root)
    if layout == "datalist":
        return _read_datalist(root, Path(base) if base else root.parent, skipped)
    if layout == "brats":
        return _read_brats(root)
    if layout in ("decathlon", "nnunet"):
        return _read_images_tr(root, layout, skipped)
    if layout == "dicom":
        return _read_dicom(root, skipped, series_modalities), "binary"
    raise DataError(f"unknown volume layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def _names_table(meta: dict) -> list[str] | None:
    table = meta.get("modality") or meta.get("channel_names")
    if not isinstance(table, dict):
        return None
    return [canonical_modality(v) for _, v in sorted(table.items(), key=lambda kv: int(kv[0]))]


def _label_map_of(meta: dict) -> str | dict:
    """The label map a ``dataset.json`` implies: nnU-Net v2 regions, the Decathlon's numbering, else binary."""
    labels = meta.get("labels")
    if isinstance(labels, dict) and any(isinstance(v, list) for v in labels.values()):  # nnU-Net region labels
        regions = {k: (v if isinstance(v, list) else [v]) for k, v in labels.items() if v not in (0, [0])}
        return {re.sub(r"\W+", "_", k.strip().lower()): [int(x) for x in v] for k, v in regions.items()}
    if isinstance(labels, dict):
        names = {str(k): str(v).lower() for k, v in labels.items()}
        if "edema" in names.get("1", "") and "enhancing" in names.get("3", ""):
            return "decathlon"
    return "binary"


def _read_datalist(path: Path, base: Path, skipped: list) -> tuple[list[Subject], str | dict]:
    if not path.is_file():
        raise DataError(f"datalist {path} does not exist; expected a JSON file with a 'training' list")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
        raise DataError(f"{path}: expected a JSON object with a 'training' list of entries")
    names = _names_table(meta)
    subjects = []
    for key, split in (("training", None), ("validation", "val"), ("test", "test")):
        for n, entry in enumerate(meta.get(key) or []):
            where = f"{path}, {key}[{n}]"
            entry = {"image": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataError(f"{where}: expected an object with an 'image' key, got {entry!r}")
            subject = _datalist_subject(entry, names, base, where, split)
            if subject is not None:
                subjects.append(subject)
    if not subjects:
        raise DataError(f"{path}: the datalist lists no subjects")
    return subjects, _label_map_of(meta)


def _resolve(value, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: expected a file path, got {value!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise DataError(f"{where}: file {p} does not exist")
    return p


def _datalist_subject(entry: dict, names: list[str] | None, base: Path, where: str, split: str | None) -> Subject:
    image = entry["image"]
    if isinstance(image, dict):
        images = {canonical_modality(k): Channel(_resolve(v, base, f"{where}, image.{k}")) for k, v in image.items()}
    elif isinstance(image, list):
        if names is not None and len(names) != len(image):
            raise DataError(f"{where}: {len(image)} image files but the datalist names {len(names)} modalities")
        keys = names or [str(i) for i in range(len(image))]
        pairs = enumerate(zip(keys, image, strict=True))
        images = {k: Channel(_resolve(v, base, f"{where}, image[{i}]")) for i, (k, v) in pairs}
    else:
        file = _resolve(image, base, f"{where}, image")
        if names is not None and len(names) > 1:  # one 4D file whose channels the table names
            images = {k: Channel(file, index=i) for i, k in enumerate(names)}
        else:
            images = {(names or ["image"])[0]: Channel(file)}
    label = Channel(_resolve(entry["label"], base, f"{where}, label")) if entry.get("label") else None
    first = label.path if label is not None else next(iter(images.values())).path
    sid = str(entry.get("subject") or entry.get("patient") or _stem(first))
    cls = entry.get("class")
    return Subject(sid, images, label, None if cls is None else str(cls), split, where)


def _read_brats(root: Path) -> tuple[list[Subject], str]:
    cases: dict[tuple[Path, str], dict[str, Path]] = {}
    seps: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            m = _BRATS_FILE.match(name)
            if m and not name.startswith("."):
                seps.add(m["sep"])
                cases.setdefault((Path(dirpath), m["case"]), {})[m["mod"].lower()] = Path(dirpath) / name
    if not cases:
        raise DataError(f"{root}: no BraTS cases (<case>_flair.nii.gz ... or <case>-t2f.nii.gz ...)")
    release = "brats2023" if any(set(m) & {"t1n", "t1c", "t2w", "t2f"} for m in cases.values()) else "brats2021"
    subjects = []
    for (folder, case), files in sorted(cases.items()):
        label = files.pop("seg", None)
        images = _in_order({canonical_modality(k): Channel(v) for k, v in sorted(files.items())})
        subjects.append(Subject(case, images, Channel(label) if label else None, where=str(folder)))
    return subjects, release


def _read_images_tr(root: Path, layout: str, skipped: list) -> tuple[list[Subject], str | dict]:
    meta_path = root / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    names = _names_table(meta)
    labels_dir = root / "labelsTr"
    subjects: dict[str, Subject] = {}
    for path in _visible(root / "imagesTr"):
        if not _NIFTI.search(path.name):
            skipped.append((str(path), "not a NIfTI file"))
            continue
        if layout == "nnunet":
            m = _NNUNET_FILE.match(path.name)
            case, ch = m["case"], int(m["ch"])
            name = names[ch] if names and ch < len(names) else f"{ch:04d}"
            subject = subjects.setdefault(case, Subject(case, {}, where=str(path.parent)))
            subject.images[name] = Channel(path)
        else:
            case = _stem(path)
            if names and len(names) > 1:
                images = {k: Channel(path, index=i) for i, k in enumerate(names)}
            else:
                images = {"image": Channel(path)}
            subjects[case] = Subject(case, images, where=str(path))
    for case, subject in subjects.items():
        subject.images = dict(sorted(subject.images.items(), key=lambda kv: _order(names, kv[0])))
        for suffix in (".nii.gz", ".nii"):
            if (labels_dir / f"{case}{suffix}").is_file():
                subject.label = Channel(labels_dir / f"{case}{suffix}")
    if not subjects:
        raise DataError(f"{root / 'imagesTr'}: no NIfTI volumes")
    default = _label_map_of(meta) if meta else ("decathlon" if layout == "decathlon" else "binary")
    return [subjects[k] for k in sorted(subjects)], default


def _order(names: list[str] | None, name: str) -> int:
    return names.index(name) if names and name in names else 99


def _series_modality(series: DicomSeries, patterns: dict[str, str] | None) -> str | None:
    if patterns is None:
        return canonical_modality(series.description)
    found = [m for m, pattern in patterns.items() if re.search(pattern, series.description, re.IGNORECASE)]
    if len(found) > 1:
        raise DataError(
            f"{series.folder}: series description {series.description!r} matches data.series_modalities "
            f"{', '.join(found)}; make the patterns exclusive"
        )
    return canonical_modality(found[0]) if found else None


def _read_dicom(root: Path, skipped: list, patterns: dict[str, str] | None = None) -> list[Subject]:
    subjects: dict[str, Subject] = {}
    for series in scan_dicom(root, skipped):
        modality = _series_modality(series, patterns)
        if modality is None:
            skipped.append((str(series.folder), f"series {series.description!r} matches no data.series_modalities"))
            continue
        subject = subjects.setdefault(series.patient, Subject(series.patient, {}, where=str(root)))
        if modality in subject.images:
            other = subject.images[modality].path
            raise DataError(
                f"{series.folder}: a second {modality!r} series of subject {series.patient} (the first is in "
                f"{other}); keep one series per modality"
            )
        subject.images[modality] = Channel(series.folder, series=series)
    for subject in subjects.values():
        subject.images = _in_order(subject.images)
    return [subjects[k] for k in sorted(subjects)]


def read_class_csv(path: str | Path) -> dict[str, str]:
    """``subject,class`` rows of a CSV as ``{subject: class}`` (ReMIND labels each subject with its tumour type).

    Raises:
        DataError: a missing file or column, an empty value, a subject listed twice with two classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class CSV {path} does not exist; expected columns subject,class")
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"subject", "class"} <= {c.strip() for c in reader.fieldnames}:
            raise DataError(f"{path}: expected columns subject,class, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row["subject"] or not row["class"]:
                raise DataError(f"{path}, line {line}: empty subject or class")
            if out.get(row["subject"], row["class"]) != row["class"]:
                raise DataError(f"{path}, line {line}: subject {row['subject']} listed with two classes")
            out[row["subject"]] = row["class"]
    return out
