"""Does pruning make the LGG tumour / no-tumour CNN9 faster? Magnitude vs channel pruning vs ONNX Runtime.

Trains CNN9 at 128 px on the LGG slices (``configs/experiments/lgg_cnn9.yaml``), then with the ``tumorlab``
commands themselves:

1. ``tumorlab prune --method magnitude --sparsity 0.5``: global L1 over conv and linear weights, fine-tuned;
2. ``tumorlab prune --method channel --sparsity 0.5``: half the filters removed with Torch-Pruning, fine-tuned;
3. ``tumorlab bench latency --onnx``: dense, magnitude-pruned and channel-pruned models, eager PyTorch and
   ONNX Runtime, CPU batch 1 and 32 at a fixed thread count.

It prints one Markdown report: the two pruning tables, the latency table and the targets (channel pruning of
50 % of filters: >= 2x lower batch-1 latency, <= 1 point of test accuracy lost after fine-tuning; magnitude
pruning's speed-up reported as measured, about 1.0x). The test split of the sample (a few patients) is small:
one slice is worth more than one point of accuracy there, so the accuracy target is checked with that grain.

    TUMORLAB_REAL_DATA=../shared/data python benchmarks/pruning.py --out /tmp/pruning.md
    python benchmarks/pruning.py --quick   # 1 epoch each: checks the pipeline, not the targets
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(os.environ.get("TUMORLAB_REAL_DATA", "data")) / "lgg-mri-segmentation"
    parser.add_argument("--root", type=Path, default=default_root, help="the LGG download (kaggle_3m inside)")
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs (default 10)")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs after pruning")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction pruned (default 0.5)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for latency (default 1)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per batch size")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--run", type=Path, help="an existing lgg_cnn9 run folder to prune instead of training one")
    parser.add_argument(
        "--checkpoint", choices=("last", "best"), default="last",
        help="prune the final weights (default) or the run's best checkpoint by val/auroc, which on the few "
        "validation patients of the sample can be an early, barely trained epoch",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="1 epoch of training and of fine-tuning, 10 runs")
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.epochs, ns.finetune_epochs, ns.runs = 1, 1, 10
    return ns


def _tumorlab(*args: str) -> None:
    from tumorlab.cli import main

    code = main(list(args))
    if code:
        sys.exit(f"tumorlab {' '.join(args)} failed with exit status {code}")


def _newest(folder: Path, pattern: str) -> Path:
    """The newest match (folders of the same second are ``..._prune``, ``..._prune_2`` ...)."""
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime_ns)


def _row(prune_dir: Path) -> dict:
    with (prune_dir / "pruning.csv").open() as f:
        return next(csv.DictReader(f))


def majority_rate(run_dir: Path) -> float:
    """The test accuracy of always answering the test split's most frequent class (the bar a model must
    clear before "accuracy lost by pruning" means anything)."""
    from tumorlab.evaluation.loading import load_run

    dm = load_run(run_dir, weights=False).datamodule
    dm.setup("test")
    counts = dm.class_counts("test")
    return float(counts.max() / counts.sum())


def _targets(magnitude: dict, channel: dict, majority: float) -> list[str]:
    change = (float(channel["finetuned_acc"]) - float(channel["dense_acc"])) * 100
    speedup = float(channel["speedup_b1"])
    dense = float(channel["dense_acc"])
    if dense <= majority + 0.01:  # a model no better than the majority class loses nothing worth measuring
        verdict = (
            f"inconclusive: the dense model ({dense:.4f}) does not beat always answering the majority class "
            f"({majority:.4f}); train it longer (--epochs) before judging the accuracy lost"
        )
    else:
        verdict = "meets at most 1 point lost" if change >= -1 else "misses at most 1 point lost"
    return [
        f"- the test split's majority class gives accuracy {majority:.4f}",
        f"- channel pruning {float(channel['sparsity']):.0%}: batch-1 speed-up {speedup:.2f}× "
        f"({'meets' if speedup >= 2 else 'misses'} >= 2×); test accuracy {float(channel['dense_acc']):.4f} -> "
        f"{float(channel['finetuned_acc']):.4f} after fine-tuning, {change:+.1f} points ({verdict})",
        f"- magnitude pruning {float(magnitude['sparsity']):.0%}: batch-1 speed-up "
        f"{float(magnitude['speedup_b1']):.2f}× "
        f"(zeroed weights are still multiplied); test accuracy {float(magnitude['dense_acc']):.4f} -> "
        f"{float(magnitude['finetuned_acc']):.4f}",
    ]


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; returns (and prints) the Markdown report."""
    ns = _args(argv)
    if not (ns.root / "kaggle_3m").is_dir():
        sys.exit(f"{ns.root}: no kaggle_3m folder; give --root or set TUMORLAB_REAL_DATA")
    os.environ.setdefault("WANDB_MODE", "disabled")
    work = ns.work or Path(tempfile.mkdtemp(prefix="tumorlab_pruning_"))
    start = time.perf_counter()
    if ns.run is None:
        _tumorlab(
            "fit", "--config", str(REPO / "configs/experiments/lgg_cnn9.yaml"), "--data.root", str(ns.root),
            "--data.image_size", str(ns.image_size), "--trainer.max_epochs", str(ns.epochs),
            "--trainer.logger", "false", "--run.root", str(work), "--run.name", "lgg_cnn9",
        )  # fmt: skip
    run_dir = ns.run or _newest(work / "lgg_cnn9", "*_fit")
    run = run_dir / "checkpoints" / "last.ckpt" if ns.checkpoint == "last" else run_dir
    fit_note = f"{time.perf_counter() - start:.0f} s" if ns.run is None else f"reused {ns.run}"
    common = ["--sparsity", str(ns.sparsity), "--finetune-epochs", str(ns.finetune_epochs)]
    common += ["--threads", str(ns.threads)]
    _tumorlab("prune", "--ckpt_path", str(run), "--method", "magnitude", *common)
    magnitude = _newest(run_dir.parent, "*_prune*")
    _tumorlab("prune", "--ckpt_path", str(run), "--method", "channel", *common)
    channel = _newest(run_dir.parent, "*_prune*")
    from tumorlab.compression.latency import bench_latency

    s = f"s{ns.sparsity:.2f}"
    table = bench_latency(
        [run, magnitude / s, channel / s], batch_sizes=(1, 32), n_threads=ns.threads, runs=ns.runs, onnx=True
    )
    command = "python benchmarks/pruning.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = "\n".join(
        [
            "## Pruning CNN9 (LGG tumour / no tumour, 128 px): magnitude vs channel, PyTorch vs ONNX Runtime",
            "",
            f"`{command}`: "
            f"{'the dense model of ' + str(ns.run) if ns.run else str(ns.epochs) + ' dense epoch(s)'} "
            f"({ns.checkpoint} checkpoint {run}), "
            f"{ns.finetune_epochs} fine-tuning epoch(s) per pruned model; "
            f"data {ns.root}; {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
            f"total {time.perf_counter() - start:.0f} s (dense fit: {fit_note}).",
            "",
            "### Magnitude pruning (global L1, unstructured)",
            "",
            (magnitude / "pruning.md").read_text().split("\n\n", 2)[-1],
            "### Channel pruning (Torch-Pruning, 50 % of filters)",
            "",
            (channel / "pruning.md").read_text().split("\n\n", 2)[-1],
            "### Latency (speed-up against the dense model in PyTorch)",
            "",
            table,
            "### Targets",
            "",
            *_targets(_row(magnitude), _row(channel), majority_rate(run_dir)),
            "",
        ]
    )
    print(report)
    if ns.out:
        ns.out.write_text(report)
    return report


if __name__ == "__main__":
    main()
