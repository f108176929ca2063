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

    from tumorlab.commands import compression, data, evaluation

    for commands in (data, evaluation, compression):
        commands.add_parsers(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
