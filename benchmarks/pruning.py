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
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, markdown_table


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(os.environ.get("TUMORLAB_REAL_DATA", "data")) / "lgg-mri-segmentation"
    parser.add_argument("--root", type=Path, default=default_root, help="the LGG download (kaggle_3m inside)")
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs (default 10)")
    parser.add_argument(
        "--finetune-epochs", type=int, default=10,
        help="fine-tuning epochs after pruning (default 10; the best by the run's validation monitor is kept)",
    )  # fmt: skip
    parser.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: the run's own)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction pruned (default 0.5)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for latency (default 1)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per batch size")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary folder)")
    parser.add_argument(
        "--run", type=Path, nargs="+",
        help="existing lgg_cnn9 fit run folders to prune instead of training one (e.g. the folds of a CV: the "
        "accuracy target is judged on their mean)",
    )  # fmt: skip
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
    from tumorlab.cli.main import main

    code = main(list(args))
    if code:
        sys.exit(f"tumorlab {' '.join(args)} failed with exit status {code}")


def _newest(folder: Path, pattern: str) -> Path:
    """The newest match (folders of the same second are ``..._prune``, ``..._prune_2`` ...)."""
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime_ns)


def _row(prune_dir: Path) -> dict:
    with (prune_dir / "pruning.csv").open() as f:
        return next(csv.DictReader(f))


def majority_rate(run_dir: Path) -> tuple[float, int]:
    """The test accuracy of always answering the test split's most frequent class (the bar a model must
    clear before "accuracy lost by pruning" means anything), and the size of the test split."""
    from tumorlab.runs.load import load_run

    dm = load_run(run_dir, weights=False).datamodule
    dm.setup("test")
    counts = dm.class_counts("test")
    return float(counts.max() / counts.sum()), int(counts.sum())


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+.1f} ± {sd:.1f}"


def _per_model(pairs: list[tuple[str, dict, dict]]) -> str:
    """One line per dense model: test accuracy and AUROC, dense -> fine-tuned, for both methods."""
    head = ["dense model", "dense acc", "magnitude acc", "channel acc", "dense AUROC", "magnitude AUROC",
            "channel AUROC", "channel kept epoch"]  # fmt: skip
    rows = [
        [name, f"{float(c['dense_acc']):.4f}", f"{float(m['finetuned_acc']):.4f}", f"{float(c['finetuned_acc']):.4f}",
         f"{float(c['dense_auroc']):.4f}", f"{float(m['finetuned_auroc']):.4f}", f"{float(c['finetuned_auroc']):.4f}",
         c["kept_epoch"]]
        for name, m, c in pairs
    ]  # fmt: skip
    return markdown_table(head, rows)


def _accuracy_verdict(changes: list[float], limit: float = -1.0) -> str:
    """``met`` / ``missed`` when the mean change ± 2 standard errors lies wholly above / below ``limit``
    points; with one model, its change alone (at the grain of one test slice)."""
    if len(changes) == 1:
        return "meets at most 1 point lost" if changes[0] >= limit else "misses at most 1 point lost"
    mean = statistics.fmean(changes)
    half = 2 * statistics.stdev(changes) / len(changes) ** 0.5
    span = f"mean ± 2 SE {mean - half:+.1f} to {mean + half:+.1f}"
    if mean - half >= limit:
        return f"at most 1 point lost: met ({span})"
    if mean + half < limit:
        return f"at most 1 point lost: missed ({span})"
    return f"at most 1 point lost: not decided ({span} contains -1: more dense models or a larger test split)"


def _targets(pairs: list[tuple[str, dict, dict]], majority: float, test_n: int) -> list[str]:
    """The verdicts, over every dense model: accuracy lost is the mean change in points (one slice of the test
    split is worth 100 / test_n points, so one model alone cannot resolve 1 point)."""

    def points(rows: list[dict], key: str) -> list[float]:
        return [(float(r[f"finetuned_{key}"]) - float(r[f"dense_{key}"])) * 100 for r in rows]

    magnitude_rows, channel_rows = [m for _, m, _ in pairs], [c for _, _, c in pairs]
    acc = {"magnitude": points(magnitude_rows, "acc"), "channel": points(channel_rows, "acc")}
    auroc = points(channel_rows, "auroc")
    speedups = [float(c["speedup_b1"]) for _, _, c in pairs]
    dense = statistics.fmean(float(c["dense_acc"]) for _, _, c in pairs)
    if dense <= majority + 0.01:  # a model no better than the majority class loses nothing worth measuring
        verdict = (
            f"inconclusive: the dense models ({dense:.4f}) do not beat always answering the majority class "
            f"({majority:.4f}); train them longer (--epochs) before judging the accuracy lost"
        )
    else:
        verdict = _accuracy_verdict(acc["channel"])
    n = len(pairs)
    return [
        f"- the test split holds {test_n} slices (one slice = {100 / test_n:.1f} points); its majority class gives "
        f"accuracy {majority:.4f}; the dense model{'s' if n > 1 else ''}: mean {dense:.4f}",
        f"- channel pruning {float(pairs[0][2]['sparsity']):.0%}: batch-1 speed-up "
        f"{min(speedups):.2f}-{max(speedups):.2f}× ({'meets' if min(speedups) >= 2 else 'misses'} >= 2×); test "
        f"accuracy change after fine-tuning {_mean_sd(acc['channel'])} points over {n} dense model(s) ({verdict}); "
        f"AUROC change {_mean_sd(auroc)} points",
        f"- magnitude pruning {float(pairs[0][1]['sparsity']):.0%}: batch-1 speed-up "
        f"{float(pairs[0][1]['speedup_b1']):.2f}× (zeroed weights are still multiplied); test accuracy change "
        f"{_mean_sd(acc['magnitude'])} points",
    ]


def _dense_runs(ns: argparse.Namespace, work: Path) -> list[Path]:
    if ns.run:
        return list(ns.run)
    _tumorlab(
        "fit", "--config", str(REPO / "configs/experiments/lgg_cnn9.yaml"), "--data.root", str(ns.root),
        "--data.image_size", str(ns.image_size), "--trainer.max_epochs", str(ns.epochs),
        "--trainer.logger", "false", "--run.root", str(work), "--run.name", "lgg_cnn9",
    )  # fmt: skip
    return [_newest(work / "lgg_cnn9", "*_fit")]


def _prune_both(run: Path, run_dir: Path, ns: argparse.Namespace) -> tuple[Path, Path]:
    """``tumorlab prune`` magnitude then channel on ``run`` (``run_dir`` or a checkpoint in it); their folders."""
    common = ["--sparsity", str(ns.sparsity), "--finetune-epochs", str(ns.finetune_epochs)]
    common += ["--threads", str(ns.threads)]
    common += ["--finetune-lr", str(ns.finetune_lr)] if ns.finetune_lr else []
    folders = []
    for method in ("magnitude", "channel"):
        _tumorlab("prune", "--ckpt_path", str(run), "--method", method, *common)
        folders.append(_newest(run_dir.parent, "*_prune*"))
    return folders[0], folders[1]


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; returns (and prints) the Markdown report."""
    ns = _args(argv)
    if not (ns.root / "kaggle_3m").is_dir():
        sys.exit(f"{ns.root}: no kaggle_3m folder; give --root or set TUMORLAB_REAL_DATA")
    os.environ.setdefault("WANDB_MODE", "disabled")
    work = ns.work or Path(tempfile.mkdtemp(prefix="tumorlab_pruning_"))
    start = time.perf_counter()
    run_dirs = _dense_runs(ns, work)
    fit_note = f"{time.perf_counter() - start:.0f} s" if not ns.run else "reused"
    runs = [r / "checkpoints" / "last.ckpt" if ns.checkpoint == "last" else r for r in run_dirs]
    pruned = [_prune_both(run, run_dir, ns) for run, run_dir in zip(runs, run_dirs, strict=True)]
    pairs = [(f"{r.parent.name}/{r.name}", _row(m), _row(c)) for r, (m, c) in zip(run_dirs, pruned, strict=True)]
    from tumorlab.compression.latency import bench_latency

    s = f"s{ns.sparsity:.2f}"
    magnitude, channel = pruned[0]
    table = bench_latency(
        [runs[0], magnitude / s, channel / s], batch_sizes=(1, 32), n_threads=ns.threads, runs=ns.runs, onnx=True
    )
    majority, test_n = majority_rate(run_dirs[0])
    command = "python benchmarks/pruning.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = "\n".join(
        [
            "## Pruning CNN9 (LGG tumour / no tumour, 128 px): magnitude vs channel, PyTorch vs ONNX Runtime",
            "",
            f"`{command}`: {len(runs)} dense model(s) "
            f"({'given with --run' if ns.run else str(ns.epochs) + ' epoch(s)'}, {ns.checkpoint} checkpoint), "
            f"{ns.finetune_epochs} fine-tuning epoch(s) per pruned model, the best kept by the run's validation "
            f"monitor; data {ns.root}; {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
            f"total {time.perf_counter() - start:.0f} s (dense fit: {fit_note}).",
            "",
            "### Every dense model: test accuracy and AUROC after pruning 50 % and fine-tuning",
            "",
            _per_model(pairs),
            "",
            f"### Magnitude pruning (global L1, unstructured) of {pairs[0][0]}",
            "",
            (magnitude / "pruning.md").read_text().split("\n\n", 2)[-1],
            f"### Channel pruning (Torch-Pruning, {ns.sparsity:.0%} of filters) of {pairs[0][0]}",
            "",
            (channel / "pruning.md").read_text().split("\n\n", 2)[-1],
            "### Latency (speed-up against the dense model in PyTorch)",
            "",
            table,
            "### Targets",
            "",
            *_targets(pairs, majority, test_n),
            "",
        ]
    )
    print(report)
    if ns.out:
        ns.out.write_text(report)
    return report


if __name__ == "__main__":
    main()
