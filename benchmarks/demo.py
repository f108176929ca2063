"""Time `make demo`'s training run (fit + test) and print its test metrics as a Markdown table, one row per run.

    python benchmarks/demo.py --runs 3 --out benchmarks/results/demo.json   # data/synth/lgg, generated if missing
    python benchmarks/demo.py --quick    # a 3-patient phantom, 1 epoch at 32 px: keeps this script working

The result goes into docs/benchmarks.md together with this command; measure on an idle machine (another job
on the same cores more than doubles the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import REPO, bench_env, markdown_table, tumorlab_cmd, write_json

DATA = REPO / "data" / "synth" / "lgg"
METRICS = ("dice", "iou", "acc", "f1", "auroc")


def tumorlab(*args: str) -> None:
    subprocess.run(tumorlab_cmd(*args), cwd=REPO, check=True, env=bench_env())


def synth(out: Path, patients: int) -> None:
    start = time.perf_counter()
    tumorlab("synth", "--layout", "lgg", "--out", str(out), "--patients", str(patients), "--seed", "0", "--overwrite")
    print(f"synth: {time.perf_counter() - start:.1f} s")


def one_run(data: Path, runs_root: Path, extra: list[str]) -> dict:
    """Wall time of ``tumorlab fit --config configs/demo.yaml --run.test_after_fit true`` and its run record."""
    start = time.perf_counter()
    tumorlab(
        "fit", "--config", "configs/demo.yaml", "--data.root", str(data), "--run.name", "bench-demo",
        "--run.root", str(runs_root), "--run.test_after_fit", "true", *extra,
    )  # fmt: skip
    wall = time.perf_counter() - start
    run = max((runs_root / "bench-demo").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    record = json.loads((run / "run.json").read_text())
    metrics = {k: record["test_metrics"][k] for k in METRICS}
    return {"run": str(run), "wall_s": wall, "train_time_s": record["train_time_s"], "test_metrics": metrics}


def table(runs: list[dict], torch_version: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch_version}"
    rows = [
        [
            machine,
            i + 1,
            f"{r['wall_s']:.0f}",
            f"{r['train_time_s']:.0f}",
            *(
                "n/a" if r["test_metrics"][k] is None else f"{r['test_metrics'][k]:.3f}" for k in METRICS
            ),  # null: undefined
        ]
        for i, r in enumerate(runs)
    ]
    if len(runs) > 1:
        walls = [r["wall_s"] for r in runs]
        rows.append(["", "median", f"{statistics.median(walls):.0f}", "", *[""] * len(METRICS)])
    header = ["machine", "run", "fit + test wall (s)", "train time (s)", "Dice", "IoU", "acc", "F1", "AUROC"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repeated fit + test runs (default 3)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="one run on a 3-patient phantom, 1 epoch, 32 px")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if ns.quick:
            data, runs, extra = Path(tmp) / "lgg", 1, ["--trainer.max_epochs", "1", "--data.image_size", "32"]
            synth(data, 3)
        else:
            data, runs, extra = DATA, ns.runs, []
            if not (DATA / "kaggle_3m" / "data.csv").exists():
                synth(DATA, 24)
        runs_root = Path(tmp) / "runs" if ns.quick else REPO / "runs"
        results = [one_run(data, runs_root, extra) for _ in range(runs)]
    record = write_json(ns.out, "demo", {"runs": runs, "data": str(data), "extra_args": extra}, results)
    print(table(results, record["versions"]["torch"]))


if __name__ == "__main__":
    main()
