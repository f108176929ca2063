"""The benchmark scripts keep working: each runs in its --quick mode and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn9", "unet"])
def test_overhead_benchmark_quick(model, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--quick", "--model", model]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| plain img/s (median) | tumorlab img/s (median) | ratio median" in r.stdout
    row = r.stdout.strip().splitlines()[-1].strip("|").split("|")
    plain, tumorlab = float(row[0]), float(row[1])
    assert plain > 0 and tumorlab > 0


@pytest.mark.slow
def test_pruning_benchmark_quick(tmp_path, lgg_phantom):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "pruning.py"), "--quick", "--root", str(lgg_phantom)]
    cmd += ["--image-size", "32", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "pruning.md")]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (tmp_path / "pruning.md").read_text()
    assert "channel" in report and "magnitude" in report and "ONNX" in report
