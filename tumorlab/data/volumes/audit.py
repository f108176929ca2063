"""``tumorlab audit`` of a volume root or a datalist: what is there before anyone trains on it.

Subjects, modalities per subject, shapes, spacings and orientations (as stored and after reorientation to RAS),
label values found, the slices each subject gives, the split by subject, identical volumes, and every problem
(a missing or inconsistent file, a missing modality, label values outside the map, NaN voxels ...) with the
subject it cost. ``VolumeData`` reads the data (``on_bad_file: skip``), so the audit sees what training would.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tumorlab.errors import DataError

__all__ = ["audit_volumes", "format_volume_audit"]


def audit_volumes(root: str, seed: int = 42, layout: str = "auto") -> dict:
    """Audit a volume root or datalist; return a JSON-ready report (``format_volume_audit`` prints it)."""
    from tumorlab.data.volumes.data import VolumeData

    dm = VolumeData(
        root, layout=layout, on_bad_file="skip", image_size=32, num_workers=0, seed=seed, slices="all",
        label_map="auto", task="multitask" if _has_labels(root, layout) else "classification",
    )  # fmt: skip
    listed = {s.id: s for s in dm.subjects}
    report: dict = {
        "root": str(root),
        "layout": dm.layout,
        "modalities": dm.modalities,
        "label_map": dm.label_map,
        "subjects": {},
        "skipped_subjects": [{"subject": s, "problem": p} for s, p in dm.skipped_subjects],
        "skipped_files": [{"path": p, "reason": r} for p, r in dm.skipped_files],
        "splits": None,
        "split_error": None,
    }
    try:
        dm.setup()
        report["splits"] = {name: dm.split_patients(name) for name in dm.datasets}
        report["slices_per_split"] = {name: len(ds) for name, ds in dm.datasets.items()}
    except DataError as err:
        report["split_error"] = str(err)
        if not dm.infos:
            dm.inspect()
    report["skipped_subjects"] = [{"subject": s, "problem": p} for s, p in dm.skipped_subjects]
    slices = Counter(s.patient for s in dm.samples)
    for sid, subject in listed.items():
        if sid not in dm.grids or sid in {s for s, _ in dm.skipped_subjects}:
            continue
        grid = dm.grid_of(sid)
        report["subjects"][sid] = {
            "modalities": list(subject.images),
            "files": {m: c.describe() for m, c in subject.images.items()},
            "label": None if subject.label is None else str(subject.label.path),
            "class": subject.class_name,
            "shape_ras": list(grid.shape),
            "spacing_mm": [round(v, 4) for v in grid.spacing],
            "orientation_stored": "".join(grid.source_axcodes),
            "label_values": dm.label_values.get(sid),
            "slices": slices.get(sid, 0),
            "fixed_split": subject.split,
        }
    report["identical_volumes"] = getattr(dm, "identical_volumes", [])
    report["warnings"] = _warnings(report)
    return report


def _has_labels(root: str, layout: str) -> bool:
    from tumorlab.data.volumes.layouts import detect_volume_layout, read_layout

    found = detect_volume_layout(root) if layout == "auto" else layout
    if found == "dicom":
        return False
    subjects, _ = read_layout(root, found, [])
    return any(s.label is not None for s in subjects)


def _warnings(report: dict) -> list[str]:
    out = []
    subjects = report["subjects"].values()
    for key, what in (("shape_ras", "shapes"), ("spacing_mm", "spacings"), ("orientation_stored", "orientations")):
        found = Counter(str(s[key]) for s in subjects)
        if len(found) > 1:
            out.append(f"{len(found)} different {what}: " + ", ".join(f"{k} ({n})" for k, n in found.most_common()))
    values = sorted({v for s in subjects for v in (s["label_values"] or [])})
    if report["label_map"] is None and len(values) > 2:
        hint = {(0, 1, 2, 4): "brats2021", (0, 1, 2, 3): "brats2023 or decathlon"}.get(tuple(values), "a map")
        out.append(
            f"label values {values} are read as one binary mask (every non-zero voxel); "
            f"set data.label_map ({hint}) for separate regions"
        )
    if report["skipped_subjects"]:
        out.append(f"{len(report['skipped_subjects'])} subjects cannot be used (skipped_subjects)")
    if report["identical_volumes"]:
        out.append(f"{len(report['identical_volumes'])} groups of identical volumes (kept in one split)")
    if report["split_error"]:
        out.append(f"no split possible: {report['split_error']}")
    return out


def format_volume_audit(report: dict, limit: int = 20) -> str:
    """The report as plain text for the terminal (``--json`` gives everything)."""
    subjects = report["subjects"]
    lines = [
        f"audit of {report['root']} ({report['layout']} layout)",
        f"subjects: {len(subjects)} usable, {len(report['skipped_subjects'])} skipped; "
        f"modalities: {', '.join(report['modalities'])}; label map: {report['label_map'] or 'binary'}",
        "",
        f"{'subject':<24}{'modalities':<28}{'shape (RAS)':<16}{'spacing mm':<20}{'stored':<8}{'labels':<16}slices",
    ]
    for sid, s in list(subjects.items())[:limit]:
        shape = "x".join(map(str, s["shape_ras"]))
        spacing = "x".join(f"{v:g}" for v in s["spacing_mm"])
        labels = ",".join(map(str, s["label_values"] or [])) or "-"
        lines.append(
            f"{sid:<24}{','.join(s['modalities']):<28}{shape:<16}{spacing:<20}{s['orientation_stored']:<8}"
            f"{labels:<16}{s['slices']}"
        )
    if len(subjects) > limit:
        lines.append(f"... {len(subjects) - limit} more (--json)")
    if report["splits"]:
        lines += ["", "splits (by subject):"]
        for name, members in report["splits"].items():
            lines.append(f"  {name:<5} {len(members):>4} subjects {report['slices_per_split'][name]:>7} slices")
    for entry in report["skipped_subjects"][:limit]:
        lines.append(f"skipped {entry['subject']}: {entry['problem']}")
    for entry in report["skipped_files"][:limit]:
        lines.append(f"passed over {Path(entry['path'])}: {entry['reason']}")
    lines.append("")
    lines += [f"warning: {w}" for w in report["warnings"]] or ["warnings: none"]
    return "\n".join(lines)
