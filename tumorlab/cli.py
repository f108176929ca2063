"""The ``tumorlab`` command: LightningCLI subcommands (fit, validate, test, predict) and plain subcommands.

Imports stay lazy: ``tumorlab --help`` and ``tumorlab synth --help`` never import torch, lightning, timm,
smp or wandb. Each plain subcommand imports its implementation only when it runs.
"""

from __future__ import annotations

import argparse
import netrc
import os
import sys
from collections.abc import Sequence

from tumorlab import __version__
from tumorlab.errors import TumorlabError

__all__ = ["main"]

LIGHTNING_COMMANDS = {
    "fit": "train a model (LightningCLI; --config, --model, --data, --trainer)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split and print the metrics",
    "predict": "write per-slice predictions of a checkpoint to the run folder",
}

# Architecture -> the task that trains it: `--model CNN9` is shorthand for
# `--model ClassificationTask --model.net CNN9`, `--model UNetWithClassifier` for
# `--model MultiTaskTask --model.net UNetWithClassifier` (train it alone with `--model SegmentationTask`).
ARCHITECTURE_TASKS = {
    "CNN9": "ClassificationTask",
    "SmallCNN": "ClassificationTask",
    "ResNet3": "ClassificationTask",
    "TimmClassifier": "ClassificationTask",
    "UNetWithClassifier": "MultiTaskTask",
}


_SHORT_HELP = """usage: tumorlab {command} --config FILE [--config FILE ...] [--KEY VALUE ...]

{description}. Every constructor argument of the model, the data module and the Lightning Trainer is a key;
later --config files and --KEY VALUE overrides win over earlier ones.

common keys:
  --config FILE                 a YAML config (configs/demo.yaml, configs/experiments/*.yaml, fragments)
  --data.root PATH              the data set (LGG kaggle_3m download, class folders) or --data.csv FILE
  --data.image_size N           side in pixels (the network is built for it); --data.batch_size N
  --data.channels [1]           the MRI channels fed (sets the network's in_channels)
  --trainer.max_epochs N        --trainer.accelerator cpu|gpu, --trainer.devices N, --trainer.precision bf16-mixed
  --run.name NAME               runs go to <run.root>/<name>/<time>_{command}/ (--run.root, default runs)
  --run.test_after_fit true     fit: test the best checkpoint when training ends
  --ckpt_path RUN_OR_CKPT       fit: resume (last, a run folder, a file); validate/test/predict: evaluate a run
                                folder with its own config.yaml, no --config needed
  --print_config                print the fully resolved config and exit

list a part's options:
  tumorlab {command} --model.help ClassificationTask    (or SegmentationTask, MultiTaskTask)
  tumorlab {command} --data.help LGGDataModule          (or FolderDataModule, ManifestDataModule)
  tumorlab {command} --help-all                         every key, the Trainer's included (long)

README.md describes models, data modules, configs and run folders.
"""


def main(args: Sequence[str] | None = None) -> int:
    """Run the ``tumorlab`` command with ``args`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS and argv[1:] in (["--help"], ["-h"]):
            print(_SHORT_HELP.format(command=argv[0], description=LIGHTNING_COMMANDS[argv[0]].split(" (")[0]))
            return 0
        if argv and argv[0] in LIGHTNING_COMMANDS and "--help-all" in argv:
            argv = [a if a != "--help-all" else "--help" for a in argv]
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from tumorlab.quiet import quiet_known_noise

            quiet_known_noise()
            configure_wandb_mode()
            from tumorlab.lightning_cli import run_lightning_cli

            run_lightning_cli(expand_model_shorthand(argv))
            return 0
        parser = build_parser()
        ns = parser.parse_args(argv)
        if not hasattr(ns, "func"):
            parser.print_help()
            return 0
        return int(ns.func(ns) or 0)
    except Exception as err:
        # jsonargparse wraps errors raised while it instantiates classes: report the user's error, if any.
        cause = _user_error(err)
        if cause is None:
            raise
        print(f"tumorlab: error: {_one_line(cause)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    """The error's own message; for one re-raised from a DataLoader worker, the last line of its traceback."""
    text = str(err)
    if "\nOriginal Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _user_error(err: BaseException | None) -> TumorlabError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, TumorlabError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def expand_model_shorthand(argv: list[str]) -> list[str]:
    """Rewrite ``--model <Architecture>`` into the task that trains it with that architecture as ``net``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg == "--model" and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--model="):
            value, step = arg.split("=", 1)[1], 1
        name = value.rsplit(".", 1)[-1] if value else None
        if name in ARCHITECTURE_TASKS:
            out += ["--model", ARCHITECTURE_TASKS[name], "--model.net", value]
            i += step
            continue
        out.append(arg)
        i += 1
    return out


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def configure_wandb_mode() -> None:
    """Log to W&B offline unless the user has credentials: no account, no network, never a login prompt.

    ``WANDB_MODE=online`` without credentials falls back to offline with a warning instead of waiting for a login.
    Offline, W&B's own console output (a page of run history and a second sync hint) is silenced: tumorlab
    prints the one line that matters, how to upload the run later.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode not in ("offline", "disabled", "dryrun") and not _has_wandb_credentials():
        if mode == "online":
            print("tumorlab: warning: WANDB_MODE=online but no W&B credentials (wandb login or WANDB_API_KEY); "
                  "logging offline instead", file=sys.stderr)
        os.environ["WANDB_MODE"] = "offline"
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        os.environ.setdefault("WANDB_SILENT", "true")


def _synth(ns: argparse.Namespace) -> int:
    from tumorlab.synth import write_folders, write_lgg

    common = {"size": ns.size, "seed": ns.seed, "difficulty": ns.difficulty, "overwrite": ns.overwrite}
    try:
        if ns.layout == "lgg":
            summary = write_lgg(ns.out, patients=ns.patients, slices=tuple(ns.slices), **common)
            print(
                f"wrote {summary['patients']} patients, {summary['slices']} slices "
                f"({summary['tumour_slices']} with tumour) to {ns.out}/kaggle_3m"
            )
        else:
            summary = write_folders(
                ns.out, train_per_class=ns.train_per_class, test_per_class=ns.test_per_class, **common
            )
            for split, counts in summary.items():
                print(f"wrote {sum(counts.values())} images to {ns.out}/{split}: {counts}")
    except (FileExistsError, ValueError) as err:
        raise TumorlabError(str(err)) from err
    return 0


def _audit(ns: argparse.Namespace) -> int:
    import json
    import logging

    from tumorlab.data.audit import audit, format_audit
    from tumorlab.quiet import quiet_known_noise

    quiet_known_noise()

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = audit(ns.root, test_root=ns.test_root, near_threshold=ns.near_threshold, seed=ns.seed)
    print(json.dumps(report, indent=2) if ns.json else format_audit(report))
    return 0


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
        n_threads=ns.threads,
        argv=_prune_argv(ns),
    )
    print(summary(out))
    return 0


def _prune_argv(ns: argparse.Namespace) -> list[str]:
    """The prune command line as parsed (for run.json; ``sys.argv`` is another program's in-process)."""
    argv = ["prune", "--ckpt_path", str(ns.ckpt_path), "--sparsity", *map(str, ns.sparsity), "--method", ns.method]
    argv += ["--finetune-epochs", str(ns.finetune_epochs), "--threads", str(ns.threads)]
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
        "--sparsity", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9],
        help="fractions in [0, 1): of weights zeroed (magnitude) or of filters removed (channel); "
        "default 0.3 0.5 0.7 0.9",
    )
    prune.add_argument(
        "--method", choices=("magnitude", "channel"), default="magnitude",
        help="magnitude: global L1 over conv and linear weights (zeros, no speed-up); "
        "channel: remove filters with Torch-Pruning (smaller and faster)",
    )
    prune.add_argument("--iterative", action="store_true", help="prune step by step through the sparsities")
    prune.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning epochs after each step (default 1)")
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
        "--ckpt_path", required=True, nargs="+",
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


def build_parser() -> argparse.ArgumentParser:
    """The parser of the plain subcommands; the LightningCLI ones are listed for ``--help`` only."""
    parser = argparse.ArgumentParser(
        prog="tumorlab",
        description="Train, compare and explain brain-tumour MRI classifiers and segmenters "
        "with leak-proof, patient-level evaluation.",
        epilog="Run `tumorlab <command> --help` for the options of a command; "
        "`tumorlab fit --config configs/demo.yaml --print_config` shows a full config.",
    )
    parser.add_argument("--version", action="version", version=f"tumorlab {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="<command>")
    for name, help_text in LIGHTNING_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)

    synth = sub.add_parser(
        "synth",
        help="generate synthetic brain-MRI phantoms in the layout of a real data set",
        description="Write a deterministic synthetic data set in the on-disk layout of the LGG kaggle_3m "
        "download (--layout lgg) or of the 4-class folder download (--layout folders).",
    )
    synth.add_argument(
        "--layout",
        choices=("lgg", "folders"),
        required=True,
        help="lgg: kaggle_3m/<case>/<case>_<n>.tif + _mask.tif + data.csv; "
        "folders: Training/ and Testing/ with one JPEG folder per class",
    )
    synth.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    synth.add_argument("--size", type=int, default=256, help="image side in pixels (the real sets: 256)")
    synth.add_argument(
        "--difficulty", type=float, default=0.3, help="0 (clean, high tumour contrast) to 1 (noisy, faint tumours)"
    )
    synth.add_argument("--patients", type=int, default=20, help="lgg: number of patients")
    synth.add_argument(
        "--slices",
        type=int,
        nargs=2,
        default=(20, 32),
        metavar=("MIN", "MAX"),
        help="lgg: slices per patient, drawn between MIN and MAX",
    )
    synth.add_argument("--train-per-class", type=int, default=60, help="folders: Training images per class")
    synth.add_argument("--test-per-class", type=int, default=15, help="folders: Testing images per class")
    synth.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    synth.set_defaults(func=_synth)

    audit = sub.add_parser(
        "audit",
        help="report what a data root holds: classes, patients, splits, duplicates, leaks, bad files",
        description="Read a data root as training would and report counts per class, patient and split, "
        "byte-identical duplicates (SHA-256), near-duplicates (256-bit perceptual hash), duplicates shared "
        "with a test root, unreadable and skipped files, image sizes and modes.",
    )
    audit.add_argument(
        "root", help="class folders (optionally Training/ + Testing/), an LGG kaggle_3m tree, or a CSV manifest"
    )
    audit.add_argument("--test-root", help="class folders of a test set whose overlap with ROOT is reported")
    audit.add_argument("--json", action="store_true", help="print the full report as JSON")
    audit.add_argument(
        "--near-threshold",
        type=int,
        default=12,  # = tumorlab.data.duplicates.DEFAULT_NEAR_THRESHOLD (not imported: keeps --help fast)
        help="perceptual-hash bits (of 256) within which two images count as near-duplicates (default 12)",
    )
    audit.add_argument("--seed", type=int, default=42, help="seed of the split that is reported (default 42)")
    audit.set_defaults(func=_audit)
    _add_compression_commands(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
