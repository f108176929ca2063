"""One rule for the probability columns of every predictions.csv: ``prob_`` + the class name as ``true_class``
writes it, for ``tumorlab predict``/``test`` and ``tumorlab predict-images`` alike, and the report reads it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAINER, REPO, only_run_dir
from tumorlab.runs.predictions import prob_classes, prob_column

# The phantom folders' classes under names with capitals and spaces, as a manifest may spell them.
LABELS = {
    "glioma_tumor": "Glioma",
    "meningioma_tumor": "Meningioma Grade 1",
    "no_tumor": "No Tumour",
    "pituitary_tumor": "PIT",
}


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_rule_is_the_class_name_as_written():
    assert prob_column("No Tumour") == "prob_No Tumour" and prob_column(1) == "prob_1"
    header = ["file", "true_class", prob_column("No Tumour"), prob_column("glioma_tumor"), "tumour_pixels"]
    assert prob_classes(header) == ["No Tumour", "glioma_tumor"]


@pytest.mark.slow  # a fit, a test and two predictions (about 15 s on a busy 2-core machine)
def test_predict_test_and_predict_images_name_the_columns_alike(folders_phantom, tmp_path, cli):
    rows = [
        {"path": str(p), "label": LABELS[p.parent.name], "patient": f"P{i:02d}"}
        for i, p in enumerate(sorted((folders_phantom / "Training").rglob("*.jpg")))
    ]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = [
        "fit",
        "--config",
        str(REPO / "configs/model/cnn9.yaml"),
        "--config",
        str(REPO / "configs/data/manifest.yaml"),
    ]
    args += [*FAST_TRAINER, "--data.csv", str(manifest), "--data.min_class_count", "1", "--data.image_size", "32"]
    args += ["--data.batch_size", "4", "--data.split", "[0.5, 0.25, 0.25]", "--model.net.init_args.width", "8"]
    args += ["--trainer.limit_test_batches", "1.0", "--run.root", str(tmp_path / "runs"), "--run.name", "named"]
    result = cli(*args, "--run.test_after_fit", "true")
    assert result.returncode == 0, result.stderr
    fit = only_run_dir(tmp_path / "runs", "named")
    (test_dir,) = [p for p in (tmp_path / "runs" / "named").iterdir() if (p / "predictions.csv").is_file()]
    tested = _read(test_dir / "predictions.csv")
    names = prob_classes(tested[0])
    assert sorted(names) == sorted(LABELS.values())  # the manifest's spelling, capitals and spaces kept
    expected = [prob_column(n) for n in names]
    assert {r["true_class"] for r in tested} <= set(names)

    files = [r["file"] for r in tested]
    out = tmp_path / "images"
    assert cli("predict-images", "--ckpt_path", str(fit), *files, "--out", str(out)).returncode == 0
    by_images = {r["file"]: r for r in _read(out / "predictions.csv")}
    assert prob_classes(next(iter(by_images.values()))) == names
    for row in tested:  # the same images, the same preprocessing: the same numbers under the same columns
        other = by_images[row["file"]]
        assert other["predicted_class"] == row["predicted_class"]
        for column in expected:
            assert float(other[column]) == pytest.approx(float(row[column]), abs=1e-4)

    report = cli("report", str(test_dir), "--no-slices")
    assert report.returncode == 0, report.stderr
    per_class = json.loads((test_dir / "metrics.json").read_text())["per_class"]
    assert set(per_class) == set(LABELS.values())
    assert sum(v["support"] for v in per_class.values()) == len(tested)
