"""Time `make demo`'s training run (fit + test) and print its test metrics as a Markdown table row.

    python benchmarks/demo.py            # uses data/synth/lgg, generating it first if missing

The result goes into docs/benchmarks.md together with this command.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "synth" / "lgg"


def tumorlab(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "tumorlab", *args],
        cwd=REPO,
        check=True,
        env={**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")},
    )


def main() -> None:
    if not (DATA / "kaggle_3m" / "data.csv").exists():
        start = time.perf_counter()
        tumorlab("synth", "--layout", "lgg", "--out", str(DATA), "--patients", "24", "--seed", "0", "--overwrite")
        print(f"synth: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    tumorlab(
        "fit",
        "--config",
        "configs/demo.yaml",
        "--data.root",
        str(DATA),
        "--run.name",
        "bench-demo",
        "--run.test_after_fit",
        "true",
    )
    wall = time.perf_counter() - start
    run = max((REPO / "runs" / "bench-demo").iterdir(), key=lambda p: p.stat().st_mtime)
    record = json.loads((run / "run.json").read_text())
    m = record["test_metrics"]
    print("| machine | fit + test wall (s) | train time (s) | Dice | IoU | acc | F1 | AUROC |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {platform.machine()}, {os.cpu_count()} CPUs, torch {record['versions']['torch']} | {wall:.0f} | "
        f"{record['train_time_s']:.0f} | {m['dice']:.3f} | {m['iou']:.3f} | {m['acc']:.3f} | {m['f1']:.3f} | "
        f"{m['auroc']:.3f} |"
    )


if __name__ == "__main__":
    main()
