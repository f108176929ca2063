"""`tumorlab bench latency`: its parser and what it runs (tumorlab.compression.latency, imported lazily)."""

from __future__ import annotations

import argparse

from tumorlab.cli.quiet import quiet_trainers

__all__ = ["add_parser"]


@quiet_trainers()
def _bench_latency(ns: argparse.Namespace) -> int:
    from tumorlab.compression.latency import bench_latency

    print(bench_latency(ns.ckpt_path, batch_sizes=ns.batch_sizes, n_threads=ns.threads, runs=ns.runs, onnx=ns.onnx))
    return 0


def add_parser(sub) -> None:
    """Add ``bench`` (``bench latency``) to the subcommands ``sub``."""
    bench = sub.add_parser("bench", help="measure trained models (bench latency)")
    bench.set_defaults(func=lambda ns: bench.print_help())
    bench_sub = bench.add_subparsers(title="benchmarks", metavar="<benchmark>")
    latency = bench_sub.add_parser(
        "latency",
        help="CPU latency (batch 1 and 32), images/s, parameters, MACs and file size of one or more models",
        description="Time each model on the CPU at a fixed thread count: warm-up, then the median and IQR of "
        "--runs calls per batch size; with --onnx also each model exported to ONNX Runtime. One table.",
    )
    latency.add_argument(
        "--ckpt_path",
        required=True,
        nargs="+",
        help="run folders or checkpoints: a dense run, pruned models (<time>_prune/s0.50) ...; "
        "the first is the reference",
    )
    latency.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], help="default 1 32")
    latency.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    latency.add_argument("--runs", type=int, default=30, help="timed calls per batch size (default 30)")
    latency.add_argument("--onnx", action="store_true", help="also time each model exported to ONNX Runtime")
    latency.set_defaults(func=_bench_latency)
