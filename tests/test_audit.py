"""`tumorlab audit` as users run it: class folders with flaws, an LGG tree, a manifest, the real data."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import pytest

from tumorlab.data.audit import MIN_SPLIT_PATIENTS
from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD
from tumorlab.data.io import read_mask
from tumorlab.data.lgg import patient_of
from tumorlab.synth import write_folders, write_lgg

SPLITS = ("train", "val", "test")


def _audit_json(cli, root: Path, cwd: Path, *args: str) -> dict:
    r = cli("audit", str(root), "--json", *args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _check_split_counts(report: dict) -> None:
    """Per class, the split counts and the dropped training copies add up to the images of the class."""
    dropped = report.get("dropped_per_class") or {}
    for name, counts in report["classes"].items():
        in_splits = sum(report["splits"][s]["per_class"][name] for s in SPLITS)
        assert in_splits + dropped.get(name, 0) == counts["images"], name
        if "test_root" in counts:  # a given test set is the test split, whole
            assert report["splits"]["test"]["per_class"][name] == counts["test_root"], name
    for s in SPLITS:
        per_class = report["splits"][s]["per_class"]
        assert list(per_class) == list(report["classes"]) and sum(per_class.values()) == report["splits"][s]["samples"]


def _mask_facts(root: Path) -> tuple[int, int, dict]:
    """Slices, empty masks and per-patient {slices, tumour_slices}, recomputed from the mask files."""
    per: dict = {}
    for mask in root.rglob("*_mask.tif"):
        entry = per.setdefault(patient_of(mask.parent.name), {"slices": 0, "tumour_slices": 0})
        entry["slices"] += 1
        entry["tumour_slices"] += int(read_mask(mask).any())
    slices = sum(v["slices"] for v in per.values())
    return slices, slices - sum(v["tumour_slices"] for v in per.values()), per


def test_audit_of_flawed_class_folders(tmp_path, cli):
    write_folders(tmp_path / "set", train_per_class=4, test_per_class=2, size=48, seed=4)
    train, test = tmp_path / "set" / "Training", tmp_path / "set" / "Testing"
    glioma = sorted((train / "glioma_tumor").glob("*.jpg"))
    shutil.copy(glioma[0], train / "glioma_tumor" / "copy.jpg")
    image = cv2.imread(str(glioma[1]))
    cv2.imwrite(str(train / "glioma_tumor" / "near.jpg"), cv2.resize(image, (52, 52)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    shutil.copy(next((test / "no_tumor").glob("*.jpg")), train / "no_tumor" / "leak.jpg")
    (train / "pituitary_tumor" / "broken.jpg").write_bytes(b"")
    (train / "pituitary_tumor" / "notes.txt").write_text("x")
    r = cli("audit", str(tmp_path / "set"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["layout"] == "folders"
    assert report["files"] == {"images": 4 * 4 + 4 + 4 * 2, "readable": 27, "unreadable": 1, "skipped": 1}
    # images: every readable image of the class (Training/ and Testing/); test_root: those in Testing/
    assert report["classes"]["glioma"] == {"images": 8, "test_root": 2}
    assert report["classes"]["pituitary"] == {"images": 6, "test_root": 2}  # broken.jpg is unreadable
    assert report["dropped_per_class"] == {"glioma": 0, "meningioma": 0, "no_tumour": 1, "pituitary": 0}
    _check_split_counts(report)
    exact = report["exact_duplicates"]["groups"]
    assert sorted(sorted(Path(p).name for p in g) for g in exact) == [
        ["copy.jpg", "gg (1).jpg"],
        ["leak.jpg", "no (1).jpg"],
    ]
    near = report["near_duplicates"]
    assert near["threshold_bits"] == DEFAULT_NEAR_THRESHOLD
    assert [sorted(Path(p).name for p in g) for g in near["groups"]] == [["gg (2).jpg", "near.jpg"]]
    assert [sorted(Path(p).name for p in g) for g in report["cross_root_duplicates"]["exact"]] == [
        ["leak.jpg", "no (1).jpg"]
    ]
    assert (
        report["unreadable_files"][0]["path"].endswith("broken.jpg")
        and "0 bytes" in report["unreadable_files"][0]["error"]
    )
    assert report["skipped_files"] == [
        {"path": str(train / "pituitary_tumor" / "notes.txt"), "reason": "not an image file (.txt)"}
    ]
    assert report["dropped_test_duplicates"] == 1 and report["splits"]["test"]["samples"] == 8
    assert report["modes"] == {"RGB 8-bit": 27} and report["sizes"] == {"48x48": 26, "52x52": 1}

    table = cli("audit", str(tmp_path / "set"), "--near-threshold", "0", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "exact duplicates (SHA-256): 2 groups, 4 files, 2 redundant copies" in out
    assert "at most 0 bits apart" in out and "unreadable files (1):" in out and "broken.jpg" in out
    assert "duplicates shared by training and test data: 1 exact groups" in out
    head = next(line for line in out.splitlines() if line.startswith("class "))
    assert head.split() == ["class", "images", "test", "root", "train", "val", "test", "dropped"]
    glioma = next(line for line in out.splitlines() if line.startswith("glioma ")).split()
    assert glioma == ["glioma", "8", "2", *(str(report["splits"][s]["per_class"]["glioma"]) for s in SPLITS), "0"]


def test_audit_warns_of_a_split_without_a_class(tmp_path, cli):
    write_folders(tmp_path / "set", train_per_class=4, test_per_class=0, size=32, seed=2)
    root = tmp_path / "set" / "Training"  # no test set: all three splits are drawn from it
    for extra in sorted((root / "glioma_tumor").glob("*.jpg"))[1:]:
        extra.unlink()  # one glioma image: it lands in one split, the other two have none
    report = _audit_json(cli, root, tmp_path)
    assert report["classes"]["glioma"] == {"images": 1}
    _check_split_counts(report)
    assert sum(report["splits"][s]["per_class"]["glioma"] == 0 for s in SPLITS) == 2
    missing = {s: [c for c, n in report["splits"][s]["per_class"].items() if n == 0] for s in SPLITS}
    # one line per split that lacks a class; class folders have no patients: the patient rule does not apply
    expected = [f"split {s!r} has no image of class {', '.join(m)}" for s, m in missing.items() if m]
    assert len(expected) == 2 and report["warnings"] == expected
    out = cli("audit", str(root), cwd=tmp_path).stdout
    assert "warnings (2):" in out and all(f"\n  {w}\n" in out for w in expected)


def test_audit_warns_of_splits_with_few_patients(tmp_path, cli):
    write_lgg(tmp_path / "lgg", patients=4, slices=(3, 4), size=32, seed=1)
    report = _audit_json(cli, tmp_path / "lgg", tmp_path)
    patients = {s: report["splits"][s]["patients"] for s in SPLITS}
    assert sum(patients.values()) == 4 and max(patients.values()) < MIN_SPLIT_PATIENTS
    few = [w for w in report["warnings"] if "patient" in w]
    assert few == [
        f"split {s!r} has {n} patient{'s' * (n != 1)} (fewer than 3): its metrics rest on too few people"
        for s, n in patients.items()
    ]
    _check_split_counts(report)
    write_lgg(tmp_path / "two", patients=2, slices=(3, 3), size=32, seed=1)
    report = _audit_json(cli, tmp_path / "two", tmp_path)
    needs = "a train/val/test split by patient needs at least 3 patients, found 2"
    assert report["splits"] is None and report["warnings"] == [f"no train/val/test split possible: {needs}"]
    out = cli("audit", str(tmp_path / "two"), cwd=tmp_path).stdout
    assert f"warnings (1):\n  no train/val/test split possible: {needs}" in out
    totals = next(line for line in out.splitlines() if line.startswith("all classes"))
    assert totals.split() == ["all", "classes", "6", "-", "-", "-"]


def test_audit_of_an_lgg_tree_and_a_test_root(lgg_phantom, folders_phantom, tmp_path, cli):
    report = _audit_json(cli, lgg_phantom, tmp_path)
    slices, empty, per_patient = _mask_facts(lgg_phantom)
    assert report["layout"] == "lgg" and report["files"]["images"] == slices
    assert len(report["patients"]) == 8
    assert sum(s["samples"] for s in report["splits"].values()) == slices
    assert report["masks"] == {
        "slices": slices,
        "empty": empty,
        "empty_share": round(empty / slices, 4),
        "per_patient": per_patient,
    }
    assert 0 < empty < slices
    assert report["classes"] == {"no_tumour": {"images": empty}, "tumour": {"images": slices - empty}}
    _check_split_counts(report)
    # a split of fewer than 3 patients is warned of; one of 3 or more is not
    few = [s for s in SPLITS if report["splits"][s]["patients"] < MIN_SPLIT_PATIENTS]
    assert few and [w.split("'")[1] for w in report["warnings"] if "patient" in w] == few
    out = cli("audit", str(lgg_phantom), cwd=tmp_path).stdout
    share = f"{empty / slices:.1%}"
    assert f"masks: {slices} slices, {empty} with an empty mask ({share}), {slices - empty} with tumour" in out
    r = cli("audit", str(folders_phantom / "Training"), "--test-root", str(folders_phantom / "Testing"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test root" in r.stdout and "duplicates shared by training and test data: 0 exact groups" in r.stdout


def test_audit_of_a_missing_root_says_so(folders_phantom, tmp_path, cli):
    for args, what in (
        ([str(tmp_path / "nowhere")], f"data root {tmp_path / 'nowhere'}"),
        ([str(folders_phantom), "--test-root", str(tmp_path / "gone")], f"test root {tmp_path / 'gone'}"),
    ):
        bad = cli("audit", *args, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr.startswith(f"tumorlab: error: {what} does not exist; expected ")
        assert bad.stderr.count("\n") == 1  # one line


def test_audit_of_a_manifest_with_a_test_split(folders_phantom, tmp_path, cli):
    rows = []
    for split, folder in (("train", "Training"), ("test", "Testing")):
        for i, path in enumerate(sorted((folders_phantom / folder).rglob("*.jpg"))):
            rows.append({"path": path, "label": path.parent.name, "patient": f"{split}{i % 6}", "split": split})
    with open(tmp_path / "m.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "patient", "split"])
        writer.writeheader()
        writer.writerows(rows)
    report = _audit_json(cli, tmp_path / "m.csv", tmp_path)
    per_class = Counter(r["label"] for r in rows)
    test_rows = Counter(r["label"] for r in rows if r["split"] == "test")
    assert report["classes"] == {c: {"images": per_class[c], "test_root": test_rows[c]} for c in sorted(per_class)}
    _check_split_counts(report)
    assert report["masks"] is None and report["cross_root_duplicates"] == {"exact": [], "near": []}
    assert report["splits"]["test"]["patients"] == 6 and report["splits"]["val"]["patients"] < MIN_SPLIT_PATIENTS
    assert any(w.startswith("split 'val' has") and "fewer than 3" in w for w in report["warnings"])
    assert "split=test" in cli("audit", str(tmp_path / "m.csv"), cwd=tmp_path).stdout


@pytest.mark.slow  # reads and hashes all 2,870 real images (about 10 s)
def test_audit_of_the_real_four_class_folder(real_data, tmp_path, cli):
    root = real_data / "brain-tumor-classification" / "Training"
    r = cli("audit", str(root), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    by_hash = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.jpg"))
    assert sum(by_hash.values()) == report["files"]["readable"] == 2870
    groups = report["exact_duplicates"]["groups"]
    assert len(groups) == sum(1 for n in by_hash.values() if n > 1) == 73
    assert sum(map(len, groups)) == 166
    assert {k: v["images"] for k, v in report["classes"].items()} == {
        "glioma": 826,
        "meningioma": 822,
        "no_tumour": 395,
        "pituitary": 827,
    }
    assert report["modes"] == {"RGB 8-bit": 2870} and report["sizes"]["512x512"] == 2309 and len(report["sizes"]) == 361
    assert len(report["near_duplicates"]["groups"]) > 0
    _check_split_counts(report)
    assert report["warnings"] == []


@pytest.mark.slow  # reads all 1,229 real slices and their masks (about 5 s)
def test_audit_of_the_real_lgg_folder(real_data, tmp_path, cli):
    root = real_data / "lgg-mri-segmentation"
    report = _audit_json(cli, root, tmp_path)
    slices, empty, per_patient = _mask_facts(root / "kaggle_3m")  # the copy the loader reads
    assert (slices, empty, len(per_patient)) == (1229, 1229 - 462, 36)
    assert report["masks"]["per_patient"] == per_patient
    assert (report["masks"]["slices"], report["masks"]["empty"]) == (slices, empty)
    _check_split_counts(report)


@pytest.mark.slow
def test_audit_reads_the_data_without_importing_lightning(lgg_phantom, tmp_path):
    """The audit uses the DataModules' own classes (tumorlab.data.LGGData ...), not Lightning's: it starts in
    about half the time of a command that imports Lightning."""
    code = (
        "import contextlib, io, sys\nfrom tumorlab.cli.main import main\nout = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out):\n    code = main(['audit', {str(lgg_phantom)!r}, '--json'])\n"
        f"open({str(tmp_path / 'audit.json')!r}, 'w').write(out.getvalue())\n"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "0 []"
    assert json.loads((tmp_path / "audit.json").read_text())["patients"]  # it did read the phantom


def test_the_datamodules_are_the_data_classes_with_lightning():
    from lightning.pytorch import LightningDataModule

    from tumorlab.data import FolderDataModule, LGGDataModule, ManifestDataModule, TumorDataModule
    from tumorlab.data.lgg import LGGData

    for cls in (FolderDataModule, LGGDataModule, ManifestDataModule):
        assert issubclass(cls, TumorDataModule) and issubclass(cls, LightningDataModule)
    assert issubclass(LGGDataModule, LGGData) and not issubclass(LGGData, LightningDataModule)
    assert LGGDataModule.__doc__ == LGGData.__doc__  # the CLI's help shows the arguments
