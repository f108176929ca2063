"""The ``tumorlab`` command: LightningCLI subcommands (fit, validate, test, predict) and plain subcommands.

Imports stay lazy: ``tumorlab --help`` and ``tumorlab synth --help`` never import torch, lightning, timm,
smp or wandb. Each plain subcommand imports its implementation only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tumorlab import __version__

__all__ = ["main"]

LIGHTNING_COMMANDS = {
    "fit": "train a model (LightningCLI; --config, --model, --data, --trainer)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split and print the metrics",
    "predict": "write per-slice predictions of a checkpoint to the run folder",
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
                                folder with its own config.yaml, no --config needed (runs/NAME: its newest
                                finished fit)
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
            from tumorlab.cli.config import configure_wandb_mode, expand_model_shorthand
            from tumorlab.cli.quiet import quiet_known_noise

            quiet_known_noise()
            configure_wandb_mode()
            from tumorlab.cli.lightning import run_lightning_cli

            run_lightning_cli(expand_model_shorthand(argv))
            return 0
        parser = build_parser()
        ns = parser.parse_args(argv)
        if not hasattr(ns, "func"):
            parser.print_help()
            return 0
        return int(ns.func(ns) or 0)
    except Exception as err:
        from tumorlab.cli.messages import report_error

        return report_error(err)


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

    # one module per command: argparse code only, its implementation imported when it runs
    from tumorlab.cli.commands import (
        audit,
        bench,
        cam,
        compare,
        cv,
        ensemble,
        export,
        predict_images,
        prune,
        report,
        synth,
        weights,
    )

    for command in (synth, audit, report, compare, cam, cv, ensemble, prune, bench, export, predict_images, weights):
        command.add_parser(sub)
    return parser
