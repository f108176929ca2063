"""`tumorlab audit` as users run it: class folders with flaws, an LGG tree, the real 4-class folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import cv2

from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD
from tumorlab.synth import write_folders


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
    assert report["classes"]["glioma"] == {"train": 6, "test": 2} and report["classes"]["pituitary"]["train"] == 4
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


def test_audit_of_an_lgg_tree_and_a_test_root(lgg_phantom, folders_phantom, tmp_path, cli):
    r = cli("audit", str(lgg_phantom), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    masks = sorted(lgg_phantom.rglob("*_mask.tif"))
    assert report["layout"] == "lgg" and report["files"]["images"] == len(masks)
    assert len(report["patients"]) == 8
    assert sum(s["samples"] for s in report["splits"].values()) == len(masks)
    r = cli(
        "audit", str(folders_phantom / "Training"), "--test-root", str(folders_phantom / "Testing"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "test root" in r.stdout and "duplicates shared by training and test data: 0 exact groups" in r.stdout
    bad = cli("audit", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("tumorlab: error:") and "nowhere" in bad.stderr


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
    assert {k: sum(v.values()) for k, v in report["classes"].items()} == {
        "glioma": 826,
        "meningioma": 822,
        "no_tumour": 395,
        "pituitary": 827,
    }
    assert report["modes"] == {"RGB 8-bit": 2870} and report["sizes"]["512x512"] == 2309 and len(report["sizes"]) == 361
    assert len(report["near_duplicates"]["groups"]) > 0
