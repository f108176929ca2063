"""`tumorlab prune`, `bench latency`, `export` and `predict-images`: their parsers and what they run (imported
lazily)."""

from __future__ import annotations

import argparse

from tumorlab.errors import TumorlabError

__all__ = ["add_parsers"]


def _quiet_trainers() -> None:
    """The prune/bench/export/predict-images commands build Trainers of their own: keep their info lines out."""
    import logging

    from tumorlab.quiet import quiet_known_noise

    quiet_known_noise()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)


def _prune(ns: argparse.Namespace) -> int:
    _quiet_trainers()
    from tumorlab.compression.study import prune_run, summary

    out = prune_run(
        ns.ckpt_path,
        sparsity=ns.sparsity,
        method=ns.method,
        iterative=ns.iterative,
        finetune_epochs=ns.finetune_epochs,
        finetune_lr=ns.finetune_lr,
        n_threads=ns.threads,
        argv=_prune_argv(ns),
    )
    print(summary(out))
    return 0


def _prune_argv(ns: argparse.Namespace) -> list[str]:
    """The prune command line as parsed (for run.json; ``sys.argv`` is another program's in-process)."""
    argv = ["prune", "--ckpt_path", str(ns.ckpt_path), "--sparsity", *map(str, ns.sparsity), "--method", ns.method]
    argv += ["--finetune-epochs", str(ns.finetune_epochs), "--threads", str(ns.threads)]
    argv += [] if ns.finetune_lr is None else ["--finetune-lr", str(ns.finetune_lr)]
    return argv + (["--iterative"] if ns.iterative else [])


def _bench_latency(ns: argparse.Namespace) -> int:
    _quiet_trainers()
    from tumorlab.compression.latency import bench_latency

    print(bench_latency(ns.ckpt_path, batch_sizes=ns.batch_sizes, n_threads=ns.threads, runs=ns.runs, onnx=ns.onnx))
    return 0


def _export(ns: argparse.Namespace) -> int:
    _quiet_trainers()
    from tumorlab.compression.export import export_run

    path = export_run(ns.ckpt_path, out=ns.out, dynamic_batch=ns.dynamic_batch, opset=ns.opset, check=not ns.no_check)
    print(f"exported: {path}")
    return 0


def _predict_images(ns: argparse.Namespace) -> int:
    from tumorlab.compression.predict_images import predict_images

    if (ns.ckpt_path is None) == (ns.onnx is None):
        raise TumorlabError("predict-images needs exactly one of --ckpt_path RUN and --onnx FILE")
    if ns.ckpt_path is not None:
        _quiet_trainers()
    summary = predict_images(
        ns.paths, ckpt_path=ns.ckpt_path, onnx=ns.onnx, out=ns.out, batch_size=ns.batch_size, masks=not ns.no_masks
    )
    print(summary)
    return 0


def _add_compression_commands(sub) -> None:
    """``prune``, ``bench latency``, ``export`` and ``predict-images`` (tumorlab.compression)."""
    prune = sub.add_parser(
        "prune",
        help="prune a trained run (weight magnitude or whole channels), fine-tune, and tabulate accuracy and speed",
        description="Prune a run's network to each sparsity, test it, fine-tune it with the run's own task and data, "
        "test it again, and write the table (pruning.md, pruning.csv) and one run folder per pruned model into a "
        "new folder beside the run (<root>/<name>/<time>_prune/).",
    )
    prune.add_argument("--ckpt_path", required=True, help="a run folder (its best checkpoint) or a checkpoint in it")
    prune.add_argument(
        "--sparsity",
        type=float,
        nargs="+",
        default=[0.3, 0.5, 0.7, 0.9],
        help="fractions in [0, 1): of weights zeroed (magnitude) or of filters removed (channel); "
        "default 0.3 0.5 0.7 0.9",
    )
    prune.add_argument(
        "--method",
        choices=("magnitude", "channel"),
        default="magnitude",
        help="magnitude: global L1 over conv and linear weights (zeros, no speed-up); "
        "channel: remove filters with Torch-Pruning (smaller and faster)",
    )
    prune.add_argument("--iterative", action="store_true", help="prune step by step through the sparsities")
    prune.add_argument(
        "--finetune-epochs",
        type=int,
        default=1,
        help="fine-tuning epochs after each step (default 1); the best epoch by the run's model.monitor on the "
        "validation split is kept",
    )
    prune.add_argument(
        "--finetune-lr", type=float, help="learning rate while fine-tuning (default: the run's own optimiser's)"
    )
    prune.add_argument("--threads", type=int, default=1, help="CPU threads for the latency column (default 1)")
    prune.set_defaults(func=_prune)

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

    export = sub.add_parser(
        "export",
        help="export a trained run's network to ONNX with its preprocessing as metadata",
        description="Write a self-contained ONNX file of the run's network; image size, mean, std, channels, "
        "class names and the task are stored as ONNX metadata_props, and onnxruntime's outputs are checked "
        "against PyTorch's.",
    )
    export.add_argument("--ckpt_path", required=True, help="a run folder or a checkpoint in it")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx")
    export.add_argument("--out", help="the .onnx file (default: RUN/model.onnx)")
    export.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1 only)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--no-check", action="store_true", help="skip the onnxruntime-against-PyTorch check")
    export.set_defaults(func=_export)

    predict = sub.add_parser(
        "predict-images",
        help="predict image files, folders or globs with a run or an exported ONNX file",
        description="Apply the model's own preprocessing to each image and write predictions.csv (file, "
        "predicted class, probabilities; an error column for unreadable files); segmentation models also write "
        "a mask PNG and an overlay per image.",
    )
    predict.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    predict.add_argument("--ckpt_path", help="a run folder or a checkpoint in it")
    predict.add_argument("--onnx", help="an ONNX file written by `tumorlab export` (onnxruntime only, no torch)")
    predict.add_argument("--out", help="output folder (default: a new folder beside the run or the ONNX file)")
    predict.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    predict.add_argument("--no-masks", action="store_true", help="segmentation: no mask PNGs or overlays")
    predict.set_defaults(func=_predict_images)


def add_parsers(sub) -> None:
    """Add ``prune``, ``bench``, ``export`` and ``predict-images`` to the subcommands ``sub``."""
    _add_compression_commands(sub)
