"""`tumorlab prune`: its parser and what it runs (tumorlab.compression.study, imported lazily)."""

from __future__ import annotations

import argparse

from tumorlab.cli.quiet import quiet_trainers

__all__ = ["add_parser"]


@quiet_trainers()
def _prune(ns: argparse.Namespace) -> int:
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


def add_parser(sub) -> None:
    """Add ``prune`` to the subcommands ``sub``."""
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
