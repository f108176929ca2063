"""``tumorlab audit``: what is in a data root before anyone trains on it.

Counts per class, patient and split; byte-identical duplicates (SHA-256) and near-duplicates (256-bit
perceptual hash within a stated number of bits); duplicates shared between the training data and a test
root; unreadable files; files passed over; image sizes and modes. The same DataModules that train read the
data here (with ``on_bad_file: skip``), so the audit sees exactly what training would see.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from tumorlab.data.base import TumorDataModule
from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD, PHASH_SIZE, duplicate_groups
from tumorlab.errors import DataError

__all__ = ["detect_layout", "audit", "format_audit"]


def detect_layout(root: str | Path) -> str:
    """``manifest`` for a CSV file, ``lgg`` for a folder holding ``*_mask.tif`` slices, else ``folders``."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "manifest"
    if not root.is_dir():
        raise DataError(f"{root} is neither a data folder nor a CSV manifest")
    for path in root.rglob("*_mask.tif*"):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            return "lgg"
    return "folders"


def _datamodule(root: str, layout: str, test_root: str | None, near_threshold: int, seed: int) -> TumorDataModule:
    common = {
        "on_bad_file": "skip",
        "cache": "none",
        "near_threshold": near_threshold,
        "num_workers": 0,
        "image_size": 32,
        "seed": seed,
    }
    if layout == "lgg":
        from tumorlab.data.lgg import LGGDataModule

        dm = LGGDataModule(root, **common)
    elif layout == "manifest":
        from tumorlab.data.manifest import ManifestDataModule

        dm = ManifestDataModule(root, **common)
    else:
        from tumorlab.data.folders import FolderDataModule

        dm = FolderDataModule(root, test_root=test_root, **common)
    return dm


def _groups(labels: np.ndarray, members: np.ndarray) -> list[list[int]]:
    by_label: dict[int, list[int]] = defaultdict(list)
    for i in members.tolist():
        by_label[int(labels[i])].append(i)
    return sorted((g for g in by_label.values() if len(g) > 1), key=lambda g: g[0])


def audit(
    root: str, test_root: str | None = None, near_threshold: int = DEFAULT_NEAR_THRESHOLD, seed: int = 42
) -> dict:
    """Audit ``root`` (class folders, an LGG ``kaggle_3m`` tree or a CSV manifest); return a JSON-ready report."""
    layout = detect_layout(root)
    if test_root is not None and layout != "folders":
        raise DataError(f"--test-root applies to class-folder data; {root} is {layout} data")
    dm = _datamodule(root, layout, test_root, near_threshold, seed)
    dm.inspect(perceptual_hashes=True)  # near-duplicates are reported whatever the data module groups by
    infos, samples, keep = dm.infos, dm.samples, dm.keep
    ok = np.flatnonzero(keep)
    sha = [x.sha256 if keep[i] else None for i, x in enumerate(infos)]
    exact = duplicate_groups(sha, keep, "exact")[0]
    near = duplicate_groups(sha, keep, "near", [x.phash for x in infos], near_threshold)[0]
    exact_groups = _groups(exact, ok)
    near_groups = [g for g in _groups(near, ok) if len({sha[i] for i in g}) > 1]

    def names(group: list[int]) -> list[str]:
        return [str(samples[i].image) for i in group]

    def cross(groups: list[list[int]]) -> list[list[str]]:
        return [names(g) for g in groups if len({samples[i].source for i in g}) > 1]

    sources = sorted({s.source or "all" for s in samples})
    per_class = {
        name: {src: sum(1 for i in ok if dm.labels[i] == c and (samples[i].source or "all") == src) for src in sources}
        for c, name in enumerate(dm.class_names)
    }
    report = {
        "root": str(root),
        "test_root": test_root,
        "layout": layout,
        "files": {
            "images": len(samples),
            "readable": int(keep.sum()),
            "unreadable": len(dm.bad_files),
            "skipped": len(dm.skipped_files),
        },
        "classes": per_class,
        "patients": _patients(dm, ok) if layout != "folders" else None,
        "splits": None,
        "split_error": None,
        "exact_duplicates": {"hash": "SHA-256 of the file bytes", "groups": [names(g) for g in exact_groups]},
        "near_duplicates": {
            "hash": f"imagehash.phash, {PHASH_SIZE * PHASH_SIZE} bits",
            "threshold_bits": near_threshold,
            "groups": [names(g) for g in near_groups],
        },
        "cross_root_duplicates": {"exact": cross(exact_groups), "near": cross(_groups(near, ok))},
        "sizes": {f"{w}x{h}": n for (w, h), n in Counter((infos[i].width, infos[i].height) for i in ok).most_common()},
        "modes": dict(Counter(infos[i].mode for i in ok).most_common()),
        "unreadable_files": [{"path": p, "error": e} for p, e in dm.bad_files],
        "skipped_files": [{"path": p, "reason": r} for p, r in dm.skipped_files],
    }
    try:
        dm.setup()
        report["splits"] = dm.describe_splits()
        report["split_settings"] = {"seed": seed, "fractions": list(dm.split)}
        report["dropped_test_duplicates"] = len(dm.dropped_test_duplicates)
    except DataError as err:
        report["split_error"] = str(err)
    return report


def _patients(dm: TumorDataModule, ok: np.ndarray) -> dict:
    """Images per patient and, per patient, images per class."""
    per: dict[str, dict] = defaultdict(lambda: {"images": 0, "classes": Counter()})
    for i in ok.tolist():
        entry = per[dm.samples[i].patient]
        entry["images"] += 1
        entry["classes"][dm.class_names[dm.labels[i]]] += 1
    return {p: {"images": v["images"], "classes": dict(sorted(v["classes"].items()))} for p, v in sorted(per.items())}


def _short(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(Path(root).parent))
    except ValueError:
        return path


def _join(paths: list[str], root: str, sep: str) -> str:
    return "  " + sep.join(_short(p, root) for p in paths)


def _class_table(report: dict) -> list[str]:
    sources = sorted({s for counts in report["classes"].values() for s in counts})
    lines = ["class".ljust(16) + "".join(s.rjust(9) for s in sources) + "total".rjust(9)]
    for name, counts in report["classes"].items():
        cells = "".join(str(counts[s]).rjust(9) for s in sources)
        lines.append(name.ljust(16) + cells + str(sum(counts.values())).rjust(9))
    return lines


def _patient_lines(per: dict, limit: int) -> list[str]:
    n = [v["images"] for v in per.values()]
    lines = [
        "",
        f"patients: {len(per)}; images per patient: min {min(n)}, median {statistics.median(n):g}, max {max(n)}",
    ]
    for patient, v in list(per.items())[:limit]:
        classes = ", ".join(f"{k} {c}" for k, c in v["classes"].items())
        lines.append(f"  {patient:<28} {v['images']:>5} images   {classes}")
    if len(per) > limit:
        lines.append(f"  ... {len(per) - limit} more (--json)")
    return lines


def _split_lines(report: dict) -> list[str]:
    if not report["splits"]:
        return [f"splits: not possible: {report['split_error']}"]
    settings = report["split_settings"]
    lines = [
        f"splits (seed {settings['seed']}, fractions {settings['fractions']}; patients and duplicates kept whole):"
    ]
    for name, s in report["splits"].items():
        classes = ", ".join(f"{k} {v}" for k, v in sorted(s["classes"].items()))
        lines.append(f"  {name:<5} {s['samples']:>6} images {s['patients']:>6} patients/groups   {classes}")
    if report.get("dropped_test_duplicates"):
        lines.append(f"  {report['dropped_test_duplicates']} training images dropped as copies of test images")
    return lines


def _duplicate_lines(report: dict, limit: int) -> list[str]:
    root = report["root"]
    ex, nd = report["exact_duplicates"]["groups"], report["near_duplicates"]
    files = sum(map(len, ex))
    lines = ["", f"exact duplicates (SHA-256): {len(ex)} groups, {files} files, {files - len(ex)} redundant copies"]
    lines += [_join(g, root, " = ") for g in ex[:limit]]
    if len(ex) > limit:
        lines.append(f"  ... (--json lists all {len(ex)})")
    lines.append(
        f"near duplicates ({nd['hash']}, at most {nd['threshold_bits']} bits apart, not byte-identical): "
        f"{len(nd['groups'])} groups, {sum(map(len, nd['groups']))} files"
    )
    lines += [_join(g, root, " ~ ") for g in nd["groups"][:limit]]
    if report["test_root"] or any(len(c) > 1 for c in report["classes"].values()):
        cr = report["cross_root_duplicates"]
        lines.append(
            f"duplicates shared by training and test data: {len(cr['exact'])} exact groups, {len(cr['near'])} "
            "exact or near groups"
        )
        lines += [_join(g, root, " ~ ") for g in cr["near"][:limit]]
    return lines


def format_audit(report: dict, limit: int = 10) -> str:
    """The report as a plain-text table for the terminal (``--json`` gives everything)."""
    f = report["files"]
    test = f", test root {report['test_root']}" if report["test_root"] else ""
    out = [
        f"audit of {report['root']} ({report['layout']} layout){test}",
        f"images: {f['images']}  readable: {f['readable']}  unreadable: {f['unreadable']}  skipped: {f['skipped']}",
        "",
        *_class_table(report),
    ]
    if report["patients"]:
        out += _patient_lines(report["patients"], 3 * limit)
    out += ["", *_split_lines(report), *_duplicate_lines(report, limit)]
    sizes = list(report["sizes"].items())
    common = ", ".join(f"{k}: {v}" for k, v in sizes[:5])
    out += ["", f"image sizes (width x height): {len(sizes)} distinct; {common}"]
    out.append("modes: " + ", ".join(f"{k}: {v}" for k, v in report["modes"].items()))
    if report["unreadable_files"]:
        out += ["", f"unreadable files ({len(report['unreadable_files'])}):"]
        out += [f"  {e['error']}" for e in report["unreadable_files"][:limit]]
    if report["skipped_files"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in Counter(e["reason"] for e in report["skipped_files"]).items())
        out += ["", f"files passed over ({len(report['skipped_files'])}): {reasons}"]
        out += [f"  {e['path']} ({e['reason']})" for e in report["skipped_files"][:limit]]
    return "\n".join(out)
