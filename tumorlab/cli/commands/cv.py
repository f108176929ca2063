"""`tumorlab cv`: its parser and what it runs (tumorlab.evaluation.cv, imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _cv(ns: argparse.Namespace) -> int:
    from tumorlab.errors import ConfigError
    from tumorlab.evaluation.cv import cross_validate, fold_commands, format_summary

    if (ns.folds is None) == (ns.group is None):
        raise ConfigError("give --folds K (k-fold by patient) or --group KEY (leave one group out), not both")
    if ns.print_commands:
        for command in fold_commands(ns.config, ns.folds, ns.overrides, group=ns.group):
            print(command)
        return 0
    fit = None
    if not ns.collect:
        from tumorlab.cli.config import configure_wandb_mode
        from tumorlab.cli.quiet import quiet_known_noise

        quiet_known_noise()
        configure_wandb_mode()
        from tumorlab.cli.lightning import run_command as fit
    summary = cross_validate(ns.config, ns.folds, ns.overrides, collect=ns.collect, fit=fit, group=ns.group)
    print(format_summary(summary))
    return 0


def add_parser(sub) -> None:
    """Add ``cv`` to the subcommands ``sub``."""
    cv = sub.add_parser(
        "cv",
        keep_unknown=True,
        allow_abbrev=False,  # `--data.fold` and friends pass on to fit; nothing may be read as an abbreviation
        usage="tumorlab cv --config FILE [--config FILE ...] (--folds K | --group KEY) [--print-commands] "
        "[--collect] [--KEY VALUE ...]",
        help="cross-validation by patient (k-fold) or by group (leave one institution out): one fit + test per "
        "fold, then mean ± std of the test metrics",
        description="Run `tumorlab fit ... --data.num_folds K --data.fold k --run.test_after_fit true` for every "
        "fold k in turn (folds of the non-test patients, StratifiedGroupKFold; the test patients are held out "
        "once, the same for every fold), then write the per-fold test metrics and their mean and sample "
        "standard deviation (ddof=1) to <run.root>/<run.name>-cv/<time>_cv/. With --group KEY, every fold holds "
        "out one group as its test set instead (`--data.test_group_by KEY --data.test_group V`; LGG: "
        "institution, a manifest: any column), and the summary gives each group's metrics and the pooled "
        "ones. Other --KEY VALUE options are passed on to every fit.",
    )
    cv.add_argument("--config", action="append", required=True, help="a config of tumorlab fit (repeatable)")
    cv.add_argument("--folds", type=int, help="number of folds K (at least 2)")
    cv.add_argument(
        "--group",
        metavar="KEY",
        help="leave one group out: one fold per value of KEY (LGG: institution, the TCGA_<institution>_ part of "
        "the patient id; a manifest: any column), each tested on that group and trained on the others",
    )
    cv.add_argument("--print-commands", action="store_true", help="print one `tumorlab fit` command per fold and stop")
    cv.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: summarise the newest finished run of every fold (after --print-commands)",
    )
    cv.set_defaults(func=_cv)
