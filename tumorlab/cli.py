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
            print(
                "tumorlab: warning: WANDB_MODE=online but no W&B credentials (wandb login or WANDB_API_KEY); "
                "logging offline instead",
                file=sys.stderr,
            )
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


def _report(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.report import write_report
    from tumorlab.quiet import quiet_known_noise

    quiet_known_noise()
    path = write_report(ns.run_dir, slice_panel=not ns.no_slices)
    print(f"report: {path}\nmetrics: {path.with_name('metrics.json')}\nfigures: {path.with_name('figures')}")
    return 0


def _compare(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.compare import compare_runs

    result = compare_runs(ns.run_dirs, sort=ns.sort or None, out_dir=ns.out)
    print(result.markdown.read_text(), end="")
    written = [result.markdown, result.csv] + ([result.png] if result.png else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cam(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.cam import explain, format_explanation
    from tumorlab.quiet import quiet_known_noise

    quiet_known_noise()
    result = explain(
        ns.ckpt_path, ns.out, images=ns.images, method=ns.method, misclassified=ns.misclassified, score=ns.score,
        limit=ns.limit, data_root=ns.data_root, tolerance=ns.tolerance, device=ns.device,
    )  # fmt: skip
    print(format_explanation(result, ns.out))
    return 0


def _cv(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.cv import cross_validate, fold_commands, format_summary

    if ns.print_commands:
        for command in fold_commands(ns.config, ns.folds, ns.overrides):
            print(command)
        return 0
    summary = cross_validate(ns.config, ns.folds, ns.overrides, collect=ns.collect)
    print(format_summary(summary))
    return 0


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser; with ``keep_unknown`` the options it does not know (``--data.root X`` ...) are
    kept, in order, as ``overrides`` for the ``fit`` commands it runs (``tumorlab cv``)."""

    def __init__(self, *args, keep_unknown: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_unknown = keep_unknown

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        if not self.keep_unknown:
            return ns, rest
        ns.overrides = list(rest)
        return ns, []


def _add_cam_parser(sub) -> None:
    cam = sub.add_parser(
        "cam",
        help="explain a run's predictions: Grad-CAM overlays and how well they point at the tumour",
        description="Draw class-activation maps (pytorch-grad-cam) of a trained run on images prepared exactly "
        "as the run was trained, one PNG per image (image, CAM, true and predicted class with its probability). "
        "--score measures on the test split's tumour slices (data with masks) whether the CAM of the tumour "
        "class points at the tumour.",
    )
    cam.add_argument(
        "--ckpt_path", required=True, help="a run folder (its config.yaml and best checkpoint) or a checkpoint in one"
    )
    cam.add_argument("--images", nargs="+", default=[], metavar="PATH", help="image files to explain")
    cam.add_argument("--out", required=True, help="folder for the overlays, cams.csv and localisation.json")
    cam.add_argument("--method", choices=("gradcam", "gradcam++", "scorecam"), default="gradcam")
    cam.add_argument(
        "--misclassified", action="store_true", help="also explain the test images the model gets wrong"
    )
    cam.add_argument(
        "--score",
        action="store_true",
        help="average the pointing game, IoU of the top 15 %% and energy share over the test tumour slices",
    )
    cam.add_argument("--limit", type=int, default=50, help="at most this many misclassified images (default 50)")
    cam.add_argument("--data-root", help="where the run's data lies now, if it moved (replaces data.root)")
    cam.add_argument(  # 3 = tumorlab.evaluation.localisation.DEFAULT_TOLERANCE (not imported: keeps --help fast)
        "--tolerance", type=float, default=3.0, help="pointing game: pixels the maximum may miss the mask by"
    )
    cam.add_argument("--device", help="where the network runs: cpu, cuda, cuda:1 ... (default: cuda if available)")
    cam.set_defaults(func=_cam)


def _add_cv_parser(sub) -> None:
    cv = sub.add_parser(
        "cv",
        keep_unknown=True,
        allow_abbrev=False,  # `--data.fold` and friends pass on to fit; nothing may be read as an abbreviation
        usage="tumorlab cv --config FILE [--config FILE ...] --folds K [--print-commands] [--collect] "
        "[--KEY VALUE ...]",
        help="k-fold cross-validation by patient: one fit + test per fold, then mean ± std of the test metrics",
        description="Run `tumorlab fit ... --data.num_folds K --data.fold k --run.test_after_fit true` for every "
        "fold k in turn (folds of the non-test patients, StratifiedGroupKFold; the test patients are held out "
        "once, the same for every fold), then write the per-fold test metrics and their mean and sample "
        "standard deviation (ddof=1) to <run.root>/<run.name>-cv/<time>_cv/. Other --KEY VALUE options are "
        "passed on to every fit.",
    )
    cv.add_argument("--config", action="append", required=True, help="a config of tumorlab fit (repeatable)")
    cv.add_argument("--folds", type=int, required=True, help="number of folds K (at least 2)")
    cv.add_argument(
        "--print-commands", action="store_true", help="print one `tumorlab fit` command per fold and stop"
    )
    cv.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: summarise the newest finished run of every fold (after --print-commands)",
    )
    cv.set_defaults(func=_cv)


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
    sub = parser.add_subparsers(title="commands", metavar="<command>", parser_class=_CommandParser)
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

    report = sub.add_parser(
        "report",
        help="write a run's metrics.json, figures and report.md, recomputed from its predictions.csv",
        description="Recompute a run's metrics from its predictions.csv with scikit-learn (overall, per class, "
        "confusion matrix, per patient for segmentation) and draw its figures (confusion matrix, ROC and "
        "precision-recall curves, training curves, per-patient Dice, best/median/worst slices) into the run "
        "folder, with report.md. A folder without predictions.csv gets one from `tumorlab predict` first.",
    )
    report.add_argument("run_dir", help="a test run folder (runs/<name>/<time>_test) or a fit run folder")
    report.add_argument(
        "--no-slices", action="store_true", help="skip the slice panel (it loads the model and its data)"
    )
    report.set_defaults(func=_report)

    compare = sub.add_parser(
        "compare",
        help="put runs side by side: one row per run as Markdown, CSV and a bar chart",
        description="One row per run (fit or test folder): model, data, train/val accuracy and loss at the "
        "best epoch of metrics.csv, the test metrics of run.json, parameters, training time and epochs. Runs "
        "on other data are flagged in the data_check column; folders that are not runs are skipped with a warning.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; quoted globs are expanded")
    compare.add_argument(
        "--sort", default="test/f1", help="column to sort by, best first (default test/f1; '' keeps the order)"
    )
    compare.add_argument("--out", default="comparison", help="folder for comparison.md/.csv/.png (default comparison)")
    compare.set_defaults(func=_compare)
    _add_cam_parser(sub)
    _add_cv_parser(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
