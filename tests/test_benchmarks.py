"""The benchmark scripts keep working: each runs in its --quick mode and prints its table."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn9", "unet"])
def test_overhead_benchmark_quick(model, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--quick", "--model", model, "--out", str(out)]
    cmd += ["--breakdown"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| plain img/s (median) | tumorlab img/s (median) | ratio median" in r.stdout
    row = r.stdout.strip().splitlines()[-1].strip("|").split("|")
    plain, tumorlab = float(row[0]), float(row[1])
    assert plain > 0 and tumorlab > 0
    record = json.loads(out.read_text())
    (only,) = record["results"]["rounds"]
    assert only["ratio"] == pytest.approx(only["tumorlab"] / only["plain"])
    assert "not decided" in record["results"]["verdict"]  # one round gives no spread to decide on
    assert record["settings"]["model"] == model and record["versions"]["torch"]
    # the instrumented run: the optimiser step holds the closure (forward and backward), the step holds all
    parts = record["results"]["breakdown_ms_per_step"]
    assert 0 < parts["backward"] < parts["Adam.step (runs the closure)"] <= parts["step (timed window)"] * 1.5
    assert parts["task.log"] > 0 and parts["task.forward"] > 0


def _quick(script: str, tmp_path, *args: str, timeout: int = 300) -> tuple[str, dict]:
    """Run ``benchmarks/SCRIPT --quick --out FILE``; its stdout and the JSON record it wrote."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / script), "--quick", "--out", str(out), *args]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["command"].startswith(f"python benchmarks/{script} --quick")
    assert record["machine"]["logical_cpus"] == os.cpu_count()
    return r.stdout, record


@pytest.mark.slow
def test_startup_benchmark_quick(tmp_path):
    stdout, record = _quick("startup.py", tmp_path)
    rows = {r["command"]: r for r in record["results"]}
    assert len(rows) == 4 and all(r["median_s"] > 0 for r in rows.values())
    # the help screens are argparse only; the LightningCLI parser needs Lightning, which the detector must see
    assert rows["tumorlab --help"]["heavy_imports_s"] == {}
    assert rows["tumorlab audit --help"]["heavy_imports_s"] == {}
    assert "lightning" in rows["tumorlab fit --print_config"]["heavy_imports_s"]
    assert "| tumorlab fit --print_config |" in stdout


@pytest.mark.slow
def test_memory_benchmark_quick(tmp_path):
    stdout, record = _quick("memory.py", tmp_path)
    imports, cnn9, unet = record["results"]["fits"]
    assert cnn9["max_rss_mib"] > 0 and unet["max_rss_mib"] > 0 and imports["max_rss_mib"] > 0
    (cache,) = record["results"]["caches"]
    assert cache["images"] == 68  # 3 phantom patients, seed 0
    # one 224 x 224 RGB image and one 224 x 224 mask, uint8, per slice
    assert cache["mib_per_1000_images"] == pytest.approx(224 * 224 * (3 + 1) * 1000 / 2**20)
    assert "MiB per 1,000 images" in stdout


@pytest.mark.slow
def test_data_loading_benchmark_quick(tmp_path):
    stdout, record = _quick("data_loading.py", tmp_path)
    for kind, files in (("folders", 24), ("lgg", 68)):
        result = record["results"][kind]
        assert result["files"] == files  # every file of the phantom was set up
        assert 0 < result["train_images"] < files
        rows = result["rows"]  # setup exact + near, one uncached epoch, two cached epochs (0 workers in --quick)
        assert len(rows) == 2 + 1 + 2 and all(r["images_per_s"] > 0 for r in rows)
    assert record["results"]["cnn9_train"]["images_per_s"] > 0
    assert "LGG TIFF + mask: train epoch 2 from the memory cache" in stdout


@pytest.mark.slow
def test_volumes_benchmark_quick(tmp_path):
    stdout, record = _quick("volumes.py", tmp_path)
    result = record["results"]
    assert result["subjects"] == 2 and result["voxels"] == [48, 48, 24]
    assert 0 < result["slices_cached"] <= 2 * 24 and result["decode_and_cache_s"] > 0
    assert "from_disk_cache_s" in stdout


@pytest.mark.slow
def test_demo_benchmark_quick(tmp_path):
    stdout, record = _quick("demo.py", tmp_path)
    (run,) = record["results"]
    assert run["wall_s"] > run["train_time_s"] >= 0  # the wall time holds start-up, fit and test
    assert all(v is None or 0 <= v <= 1 for v in run["test_metrics"].values())  # None: undefined on this data
    assert run["test_metrics"]["acc"] is not None and "| fit + test wall (s) |" in stdout


@pytest.mark.slow
def test_pruning_benchmark_quick(tmp_path, lgg_phantom):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "pruning.py"), "--quick", "--root", str(lgg_phantom)]
    cmd += ["--image-size", "32", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "pruning.md")]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (tmp_path / "pruning.md").read_text()
    assert "channel" in report and "magnitude" in report and "ONNX" in report
    assert "### Every dense model" in report and "| lgg_cnn9/" in report  # one row per dense model
    # the accuracy target is judged against the majority class of the test split: recount it from the rows
    # that `tumorlab test` writes for the dense run
    dense = next((tmp_path / "work" / "lgg_cnn9").glob("*_fit"))
    cmd = [sys.executable, "-m", "tumorlab", "test", "--ckpt_path", str(dense), "--run.report", "false"]
    test = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stderr[-2000:]
    with next(dense.parent.glob("*_test")).joinpath("predictions.csv").open() as f:
        counts = Counter(row["true_class"] for row in csv.DictReader(f))
    majority, n = max(counts.values()) / sum(counts.values()), sum(counts.values())
    assert (
        f"the test split holds {n} slices (one slice = {100 / n:.1f} points); its majority class gives "
        f"accuracy {majority:.4f}" in report
    )


@pytest.mark.slow
def test_results_quick_reports_what_the_runs_measured(tmp_path, lgg_phantom, folders_phantom):
    """`make results` in miniature: the document's numbers are those of the run folders it names."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    work, doc = tmp_path / "work", tmp_path / "results.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "results.py"), "--quick", "--lgg-root", str(lgg_phantom),
           "--mri4-root", str(folders_phantom), "--work", str(work), "--docs", str(doc)]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((work / "results.json").read_text())
    assert set(results["stage_wall_s"]) == {"lgg", "baseline", "cam", "mri4", "leaks"}  # pruning.py has its own --quick
    for leak in results["leaks"]:  # every test row was checked against its own training split
        with open(Path(leak["run"]) / "predictions.csv") as f:
            assert leak["test_images"] == sum(1 for _ in csv.DictReader(f)) > 0
    (lgg,) = results["lgg"]
    accs = [
        json.loads((Path(f["run"]) / "run.json").read_text())["test_metrics"]["acc"] for f in lgg["summary"]["folds"]
    ]
    assert len(accs) == 2
    text = doc.read_text()
    mean, std = statistics.mean(accs), statistics.stdev(accs)
    assert f"| cnn9 | {mean:.3f} ± {std:.3f} |" in text
    (cam,) = results["cam"]
    assert 0 <= cam["localisation"]["pointing_game"] <= 1 and cam["localisation"]["slices"] > 0
    grouped, random = (run["record"]["test_metrics"]["acc"] for run in results["mri4"]["runs"])
    assert f"smallcnn {100 * (random - grouped):+.1f}" in text
    assert "--quick run: pipeline check only" in text and "## pruning\n\nNot run yet" in text


@pytest.mark.slow
def test_results_36_patient_stages_on_a_three_site_phantom(tmp_path):
    """cv36, ensemble36 and loio36 in miniature: the ensemble's numbers are recomputed from its predictions.csv,
    every single fold is scored on the ensemble's test slices, and loio36 holds out every institution once."""
    from tumorlab.synth import write_lgg

    write_lgg(tmp_path / "lgg", patients=9, slices=(4, 5), size=32, seed=4, sites=("AA", "BB", "CC"))
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    work, doc = tmp_path / "work", tmp_path / "results.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "results.py"), "--quick", "--stages", "cv36", "ensemble36",
           "loio36", "--lgg-root", str(tmp_path / "lgg"), "--work", str(work), "--docs", str(doc)]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((work / "results.json").read_text())
    ens = results["ensemble36"]
    with open(Path(ens["runs"]["ensemble"]["run"]) / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    right = sum(row["true_class"] == row["predicted_class"] for row in rows) / len(rows)
    assert ens["runs"]["ensemble"]["acc"] == pytest.approx(right)
    assert ens["runs"]["ensemble"]["slices"] == results["cv36"]["baseline"]["slices"] == len(rows)
    singles = statistics.mean(f["acc"] for f in ens["folds"])
    assert ens["gain"]["gain"] == pytest.approx(right - singles) and ens["gain"]["low"] <= ens["gain"]["high"]
    held_out = [f["group"]["value"] for f in results["loio36"]["summary"]["folds"]]
    assert held_out == ["AA", "BB", "CC"]
    text = doc.read_text()
    assert "## LGG, 36 patients" in text and f"| ensemble of the 2 folds | {right:.3f} |" in text
    assert "leave-one-institution-out cross-validation, 3 folds" in text


def test_results_prunes_the_newest_cnn9_fit_of_every_fold(tmp_path, monkeypatch):
    """make results' pruning stage takes the lgg stage's CNN9 fold models (the newest fit of each fold)."""
    import argparse
    import time

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import results

    cv = tmp_path / "results_lgg_cnn9-cv"
    for fold, names in (("fold0", ["2026-01-01_10-00-00_fit", "2026-01-01_11-00-00_fit"]), ("fold1", ["a_fit"])):
        for name in names:
            (cv / fold / name).mkdir(parents=True)
            time.sleep(0.01)  # newest by modification time
    (cv / "fold2").mkdir()  # a fold without a fit yet: skipped
    ns = argparse.Namespace(work=tmp_path, pruning_run=None)
    assert results._dense_cnn9_runs(ns) == [cv / "fold0" / "2026-01-01_11-00-00_fit", cv / "fold1" / "a_fit"]
    assert results._dense_cnn9_runs(argparse.Namespace(work=tmp_path / "none", pruning_run=None)) == []
    assert results._dense_cnn9_runs(argparse.Namespace(work=tmp_path, pruning_run=Path("x"))) == [Path("x")]


@pytest.mark.slow
def test_transfer_benchmark_quick(tmp_path, folders_phantom):
    stdout, record = _quick(
        "transfer.py", tmp_path, "--root", str(folders_phantom), "--work", str(tmp_path / "work"), "--runs",
        "lite0_imagenet_full", "lite0_imagenet_frozen", timeout=400,
    )  # fmt: skip
    runs = {r["name"]: r for r in record["results"]["runs"]}
    assert set(runs) == {"lite0_imagenet_full", "lite0_imagenet_frozen"}
    assert runs["lite0_imagenet_frozen"]["parameters"]["trainable"] == 1280 * 4 + 4  # the head alone
    assert runs["lite0_imagenet_full"]["parameters"]["trainable"] > 3_000_000
    assert all(0 <= r["test_metrics"]["acc"] <= 1 and r["wall_s"] > 0 for r in runs.values())
    assert "| lite0_imagenet_full |" in stdout and "recall glioma" in stdout
