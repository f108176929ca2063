"""``tumorlab audit``'s terminal text: the report of ``tumorlab.data.audit.audit`` as tables and lists.

Everything shown is in the report (``--json`` gives all of it); long lists stop after ``limit`` entries.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

__all__ = ["format_audit"]


def _short(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(Path(root).parent))
    except ValueError:
        return path


def _join(paths: list[str], root: str, sep: str) -> str:
    return "  " + sep.join(_short(p, root) for p in paths)


def _has_test(report: dict) -> bool:
    """Whether the data has a given test set (``Testing/``, ``--test-root``, a manifest's ``split=test``)."""
    return any("test_root" in counts for counts in report["classes"].values())


def _class_table(report: dict) -> list[str]:
    """Per class: images read, those in the given test set, and the train / val / test split of them."""
    test_head = "split=test" if report["layout"] == "manifest" else "test root"
    head = ["images"] + ([test_head] if _has_test(report) else []) + ["train", "val", "test"]
    dropped = report.get("dropped_per_class") or {}
    if any(dropped.values()):
        head.append("dropped")
    splits = report["splits"] or {}
    rows = []
    for name, counts in report["classes"].items():
        cells = [counts["images"]] + ([counts["test_root"]] if "test_root" in counts else [])
        cells += [splits[s]["per_class"][name] if splits else "-" for s in ("train", "val", "test")]
        rows.append((name, cells + ([dropped[name]] if "dropped" in head else [])))
    columns = list(zip(*(cells for _, cells in rows), strict=True))
    totals = [sum(col) if all(isinstance(v, int) for v in col) else "-" for col in columns]
    width = max(16, *(len(n) + 2 for n, _ in rows))
    lines = ["class".ljust(width) + "".join(h.rjust(11) for h in head)]
    for name, cells in [*rows, ("all classes", totals)]:
        lines.append(name.ljust(width) + "".join(str(c).rjust(11) for c in cells))
    return lines + _legend(report, test_head)


def _legend(report: dict, test_head: str) -> list[str]:
    """What each column of the class table counts, one line per column."""
    what = " (ROOT and the test set)" if _has_test(report) else ""
    if report["layout"] == "lgg":
        what = " (a slice is tumour where its mask has any tumour pixel)"
    lines = [f"  images: readable images of the class{what}"]
    if _has_test(report):
        given = {"manifest": "split=test rows", "lgg": "--test-root"}.get(report["layout"], "Testing/ or --test-root")
        lines.append(f"  {test_head}: of those, in the given test set ({given})")
    if report["splits"]:
        settings = report["split_settings"]
        lines.append(
            f"  train, val, test: the split training draws (seed {settings['seed']}, fractions "
            f"{settings['fractions']}{'; test: the given test set' if _has_test(report) else ''})"
        )
    if any((report.get("dropped_per_class") or {}).values()):
        lines.append("  dropped: training copies of test images, left out of the split")
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
        return ["splits: none drawn (see warnings)"]
    lines = ["splits (patients and duplicate groups kept whole):"]
    for name, s in report["splits"].items():
        n = s["patients"]
        unit = f"patient{'s' * (n != 1)}" if report["layout"] != "folders" else "groups (an image and its copies)"
        lines.append(f"  {name:<5} {s['samples']:>6} images {n:>6} {unit}")
    if report.get("dropped_test_duplicates"):
        lines.append(f"  {report['dropped_test_duplicates']} training images dropped as copies of test images")
    return lines


def _warning_lines(report: dict) -> list[str]:
    if not report["warnings"]:
        return ["warnings: none"]
    return [f"warnings ({len(report['warnings'])}):", *(f"  {w}" for w in report["warnings"])]


def _mask_lines(masks: dict) -> list[str]:
    per = masks["per_patient"].values()
    tumour = [v["tumour_slices"] for v in per]
    none = sum(1 for n in tumour if n == 0)
    return [
        "",
        f"masks: {masks['slices']} slices, {masks['empty']} with an empty mask ({masks['empty_share']:.1%}), "
        f"{masks['slices'] - masks['empty']} with tumour",
        f"  tumour slices per patient: min {min(tumour)}, median {statistics.median(tumour):g}, max {max(tumour)}; "
        f"{none} of {len(tumour)} patients without any (--json: per patient)",
    ]


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
    if report["test_root"] or _has_test(report):
        cr = report["cross_root_duplicates"]
        lines.append(
            f"duplicates shared by training and test data: {len(cr['exact'])} exact groups, {len(cr['near'])} "
            "exact or near groups"
        )
        lines += [_join(g, root, " ~ ") for g in cr["near"][:limit]]
    return lines


def format_audit(report: dict, limit: int = 10) -> str:
    """The report as a plain-text table for the terminal (``--json`` gives everything)."""
    if "files" not in report:  # a volume root or datalist
        from tumorlab.data.volumes.audit import format_volume_audit

        return format_volume_audit(report, limit=2 * limit)
    f = report["files"]
    test = f", test root {report['test_root']}" if report["test_root"] else ""
    out = [
        f"audit of {report['root']} ({report['layout']} layout){test}",
        f"images: {f['images']}  readable: {f['readable']}  unreadable: {f['unreadable']}  skipped: {f['skipped']}",
        "",
        *_class_table(report),
        "",
        *_split_lines(report),
        *_warning_lines(report),
    ]
    if report["patients"]:
        out += _patient_lines(report["patients"], 3 * limit)
    if report.get("masks"):
        out += _mask_lines(report["masks"])
    out += _duplicate_lines(report, limit)
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
