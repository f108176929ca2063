"""LightningCLI for tumorlab: subclass mode for model and data, one new run folder per command.

Short class names work because the tumorlab tasks and DataModules are imported here:
``--model MultiTaskTask``, ``--data LGGDataModule``, ``--model.net UNetWithClassifier``.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

import tumorlab.data.modules  # noqa: F401  (registers the DataModules for short names)
import tumorlab.models  # noqa: F401  (registers the architectures)
import tumorlab.tasks  # noqa: F401  (registers the tasks)
from tumorlab.cli.config import (
    TRAINER_DEFAULTS,
    check_hardware,
    expand_model_shorthand,
    has_callback,
    is_fit_only,
    is_monitored_checkpoint,
    modernize_class_paths,
)
from tumorlab.cli.messages import command_options, one_line, report_error
from tumorlab.cli.quiet import quiet_known_noise
from tumorlab.cli.records import FitRecord, write_fit_record, write_start_record
from tumorlab.cli.transfer import complete_transfer, weights_from_checkpoint
from tumorlab.errors import ConfigError
from tumorlab.links import apply_normalization, check_explicit_links, fix_null_strings, link_net_args
from tumorlab.models.weights import from_checkpoint
from tumorlab.runs.config import check_against_run, with_run_config
from tumorlab.runs.folders import (
    RUN_DIR_ENV,
    check_checkpoint,
    find_checkpoint,
    find_resume_checkpoint,
    new_run_dir,
    update_run_json,
)
from tumorlab.runs.predictions import format_metrics, gather_rows, prediction_rows, write_predictions
from tumorlab.tasks.mixins import class_slug
from tumorlab.training.callbacks import ResumeCheckpoint, monitor_mode

__all__ = ["TumorlabCLI", "run_command", "run_lightning_cli", "run_predict"]


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run folder and also hand it to the loggers
    (W&B shows it under the run's config as ``cli_config``)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, Logger)]
        if not loggers:  # the dump costs about as much as a tiny fit's training steps: only for a logger
            return
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, format="yaml"))
        for logger in loggers:
            logger.log_hyperparams({"cli_config": config})


class TumorlabCLI(LightningCLI):
    """LightningCLI with tumorlab's run folders, metric tables and data checks.

    Adds ``--run.root`` (default ``runs``), ``--run.name`` (the experiment's folder),
    ``--run.test_after_fit`` (test the best checkpoint when ``fit`` ends), ``--run.channels_last`` and
    ``--run.compile``. ``fit --ckpt_path last`` resumes the newest run of the same ``--run.name``.
    """

    def __init__(self, args: list[str], tested: Path | None = None, user_args: list[str] | None = None) -> None:
        self.argv = list(user_args if user_args is not None else args)  # as typed, for run.json
        self.tested = tested  # the run folder that validate/test/predict evaluates, when known
        self._requested = args[0] if args and args[0] in LightningCLI.subcommands() else None
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_callback=LoggedSaveConfigCallback,
            save_config_kwargs={"overwrite": False},
            # errors are raised (and reported in one line by run_lightning_cli); --trainer.max_epoch is no
            # abbreviation of --trainer.max_epochs
            parser_kwargs={"exit_on_error": False, "allow_abbrev": False},
            args=args,
        )

    def subcommands(self) -> dict[str, set[str]]:
        """Only the subcommand being run gets a parser: building all four costs a third of a tiny fit."""
        every = LightningCLI.subcommands()
        return {self._requested: every[self._requested]} if self._requested else every

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run.root", type=str, default="runs", help="folder that holds all run folders")
        parser.add_argument(
            "--run.name", type=str, default="default", help="experiment name: runs go to <root>/<name>/"
        )
        parser.add_argument(
            "--run.test_after_fit",
            type=bool,
            default=False,
            help="after fit, test the best checkpoint and print the test metrics",
        )
        parser.add_argument(
            "--run.channels_last",
            type=bool,
            default=False,
            help="channels-last memory format for weights and images (faster convolutions)",
        )
        parser.add_argument("--run.compile", type=bool, default=False, help="torch.compile the network in place")
        parser.add_argument("--run.tags", type=list[str], default=[], help="W&B tags of the run (e.g. the study)")
        parser.add_argument(
            "--run.report",
            type=bool,
            default=True,
            help="after test (and run.test_after_fit) write the run report: report.md, metrics.json, figures/",
        )
        # The data module sets the network's size arguments: one number, set once (see tumorlab.links).
        link_net_args(parser)
        parser.set_defaults(TRAINER_DEFAULTS)

    def parse_arguments(self, parser, args) -> None:
        # --print_config is handled here, after tumorlab has completed the config, so that it shows what a run
        # would save as config.yaml (tumorlab's callbacks, the W&B run name), not only what the files say.
        printing = [a for a in args if a.split("=", 1)[0] == "--print_config"]
        args = [a for a in args if a not in printing]
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(one_line(str(err), command_options(parser, args))) from None
        # What the user gave, without defaults: a hand-set value that a link would overwrite must be reported.
        explicit = parser.parse_args(args, defaults=False)
        self.command = explicit.get("subcommand")
        self.explicit = explicit.get(self.command) if self.command else explicit
        if printing and self.command:
            cfg = self.config[self.command]
            self._complete(cfg)
            skip_none = "skip_null" in printing[-1]
            print(self._parser(self.command).dump(cfg, skip_none=skip_none), end="")
            raise SystemExit(0)

    def _complete(self, cfg) -> None:
        """What tumorlab adds to every config before anything is built; the saved config.yaml shows it."""
        fix_null_strings(cfg)
        modernize_class_paths(cfg)
        complete_transfer(cfg, self.explicit)
        if "verbose" in cfg and not any(a.split("=", 1)[0] == "--verbose" for a in self.argv):
            cfg.verbose = False  # validate, test: tumorlab prints one table of its own, not Lightning's too
        self._add_run_callbacks(cfg)
        loggers = cfg.trainer.logger if isinstance(cfg.trainer.logger, list) else [cfg.trainer.logger]
        for logger in loggers:
            init_args = getattr(logger, "init_args", None)
            if init_args is None or not str(logger.class_path).endswith("WandbLogger"):
                continue
            if not init_args.get("name"):
                init_args.name = cfg.run.name  # the W&B run is named like the run folder
            if not init_args.get("tags"):
                init_args.tags = list(cfg.run.tags) or None

    def _parse_ckpt_path(self) -> None:
        """Check a ``--ckpt_path`` file before LightningCLI reads its hyper-parameters: a truncated file, or one
        that holds objects other than tensors and plain values, stops with one line (``runs.check_checkpoint``)
        instead of a traceback from inside torch."""
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if path and Path(path).is_file():
            check_checkpoint(path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        check_hardware(cfg.trainer)
        if self.subcommand == "fit" and cfg.get("ckpt_path"):
            cfg.ckpt_path = find_resume_checkpoint(cfg.ckpt_path, cfg.run.root, cfg.run.name)
        elif cfg.get("ckpt_path") and cfg.ckpt_path not in ("best", "last", "hpc", "registry"):
            cfg.ckpt_path = find_checkpoint(cfg.ckpt_path)  # a missing file stops here, before anything exists
        if self.tested is not None:
            check_against_run(cfg.as_dict(), self.tested, self.argv)
            from tumorlab.runs.crossdata import set_model_classes

            set_model_classes(cfg, self.tested)  # the data is read as the model's classes (other data sets)
            # the evaluation's folder lands beside the run it evaluates: <root>/<name>/<time>_test
            if not any(a.split("=", 1)[0] in ("--run.root", "--run.name") for a in self.argv):
                cfg.run.root, cfg.run.name = str(self.tested.parent.parent), self.tested.parent.name
        self._complete(cfg)
        self.run_dir = new_run_dir(cfg.run.root, cfg.run.name, self.subcommand)
        cfg.trainer.default_root_dir = str(self.run_dir)
        loggers = cfg.trainer.logger if isinstance(cfg.trainer.logger, list) else [cfg.trainer.logger]
        for logger in loggers:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and "save_dir" in init_args:
                init_args.save_dir = str(self.run_dir)

    def _add_run_callbacks(self, cfg) -> None:
        """Add tumorlab's callbacks to the config itself, so that the saved config.yaml shows them."""
        wanted = []
        if self.command == "fit":
            wanted += [
                "tumorlab.training.callbacks.RNGState",
                "tumorlab.training.callbacks.ResumeCheckpoint",
                "tumorlab.training.callbacks.FiniteGuard",
            ]
            wanted.append("tumorlab.training.epoch_log.EpochMetrics")
        if cfg.run.channels_last:
            wanted.append("tumorlab.training.callbacks.ChannelsLast")
        if cfg.run.compile:
            wanted.append("tumorlab.training.callbacks.CompileModel")
        callbacks = cfg.trainer.callbacks or []  # one callback may be given as a single class_path dict
        callbacks = [callbacks] if isinstance(callbacks, Namespace) else list(callbacks)
        if self.command != "fit":  # a run's own config brings its training-only callbacks along
            callbacks = [cb for cb in callbacks if not is_fit_only(cb)]
        monitor = cfg.model.get("init_args", Namespace()).get("monitor") if cfg.get("model") else None
        if self.command == "fit" and monitor and cfg.trainer.get("enable_checkpointing") is not False:
            if not any(is_monitored_checkpoint(cb) for cb in callbacks):
                callbacks.append(
                    Namespace(
                        class_path="tumorlab.training.callbacks.BestCheckpoint",
                        init_args=Namespace(monitor=monitor, mode=monitor_mode(monitor), filename="epoch{epoch:02d}"),
                    )
                )
        lines = not sys.stdout.isatty()  # a log file: one line per epoch, no progress bar redrawn per batch
        for class_path in wanted:
            if not has_callback(callbacks, class_path):
                init = Namespace(print_lines=lines) if class_path.endswith("EpochMetrics") else Namespace()
                callbacks.append(Namespace(class_path=class_path, init_args=init))
        cfg.trainer.callbacks = callbacks
        if lines and not any(a.split("=", 1)[0] == "--trainer.enable_progress_bar" for a in self.argv):
            cfg.trainer.enable_progress_bar = False

    def instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        with from_checkpoint(weights_from_checkpoint(self.subcommand, cfg)):  # the checkpoint has every weight
            super().instantiate_classes()
        from tumorlab.runs.crossdata import adapt_task

        mapping = adapt_task(self.model, self.datamodule)  # a model scored on other classes: before the checks
        if self.datamodule is not None:
            check_explicit_links(self.explicit, self.datamodule)
        check = getattr(self.model, "check_data", None)
        if callable(check) and self.datamodule is not None:
            check(self.datamodule)
        normalization = apply_normalization(cfg, self.explicit, getattr(self.model, "net", None), self.datamodule)
        # Everything is valid: only now does the run folder come into being.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from tumorlab.evaluation.rows import TestPredictions

        self.trainer.callbacks.append(TestPredictions(self.run_dir))  # the test pass writes predictions.csv
        if self.subcommand == "fit":  # split counts and the parameter counts as training sees them
            self.trainer.callbacks.append(FitRecord(self.run_dir))
        for callback in self.trainer.checkpoint_callbacks:
            if callback.dirpath is None:
                callback.dirpath = str(self.run_dir / "checkpoints")
            if callback.save_last and not isinstance(callback, ResumeCheckpoint):
                print(
                    "tumorlab: warning: ModelCheckpoint(save_last=true) turned off: ResumeCheckpoint writes "
                    "checkpoints/last.ckpt after every epoch",
                    file=sys.stderr,
                )
                callback.save_last = False
        if self.trainer.is_global_zero:
            write_start_record(self, cfg, normalization, mapping)
            self._wandb_hint()

    @rank_zero_only
    def _wandb_hint(self) -> None:
        if (
            any(isinstance(lg, WandbLogger) for lg in self.trainer.loggers)
            and os.environ.get("WANDB_MODE") == "offline"
        ):
            hint = f"wandb sync {self.run_dir}/wandb/offline-run-*"
            print(f"W&B is offline (no credentials found); upload later with: {hint}")

    def after_fit(self) -> None:
        # The best model is the monitored checkpoint's; ResumeCheckpoint's last.ckpt is never called "best".
        ckpt = next((cb for cb in self.trainer.checkpoint_callbacks if is_monitored_checkpoint(cb)), None)
        best = getattr(ckpt, "best_model_path", "") or None
        if self.trainer.is_global_zero:
            write_fit_record(self, ckpt, best)
            note = best or "none (no monitored checkpoint: test_after_fit tests the final weights)"
            print(f"run folder: {self.run_dir}\nbest checkpoint: {note}")
        if self.config[self.subcommand].run.test_after_fit:
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False)
            self._report("test")

    def after_validate(self) -> None:
        self._report("val")

    def after_test(self) -> None:
        self._report("test")

    def _report(self, split: str) -> None:
        prefix = f"{split}/"
        metrics = {k[len(prefix) :]: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(prefix)}
        if not self.trainer.is_global_zero:
            return
        from tumorlab.evaluation.metrics import undefined_logged

        metrics, undefined = undefined_logged(metrics, split, self.run_dir, self.model)  # None where undefined
        update_run_json(self.run_dir, **{f"{split}_metrics": metrics, f"{split}_undefined_metrics": undefined})
        names = getattr(self.datamodule, "class_names", None) or []
        print(format_metrics(metrics, f"{split} metrics", self.run_dir, [class_slug(n) for n in names]))
        self._log_report_images(split)

    def _log_report_images(self, split: str) -> None:
        """Write the run report after a test and hand its figures to W&B, one image per key."""
        if split != "test" or not self.config[self.subcommand].run.report:
            return
        from tumorlab.evaluation.report import log_figures

        log_figures(self.trainer.loggers, self._write_report(), split)

    def _write_report(self) -> list[Path]:
        """The run report (tumorlab.evaluation): its figures, or none where it cannot be made here."""
        if self.trainer.world_size > 1:  # its predict pass runs in one process only
            print(f"tumorlab: note: for the full report run: tumorlab report {self.run_dir}", file=sys.stderr)
            return []
        from tumorlab.evaluation import write_report

        try:
            report = write_report(self.run_dir, predict=run_predict)
        except Exception as err:  # the metrics above stand; say why the report is missing, never drop it silently
            why = f"{type(err).__name__}: {err}"
            print(f"tumorlab: warning: no report ({why}); retry with: tumorlab report {self.run_dir}", file=sys.stderr)
            return []
        print(f"report: {report}")
        from tumorlab.evaluation.report import figure_files

        return figure_files(self.run_dir)

    def predict(self, **kwargs) -> None:
        batches = self.trainer.predict(**kwargs) or []
        rows = gather_rows(prediction_rows(batches))  # under DDP every process holds a share of the rows
        if self.trainer.is_global_zero:
            path = write_predictions(rows, self.run_dir)
            update_run_json(self.run_dir, predictions=str(path))
            print(f"predictions: {path} ({len(rows)} rows)")
            from tumorlab.evaluation.volumes import is_volume_segmentation, write_predicted_volumes

            if is_volume_segmentation(self.datamodule, self.model):  # one NIfTI mask per subject, source geometry
                masks = write_predicted_volumes(self.model, self.datamodule, self.run_dir)
                print(f"masks: {len(masks)} NIfTI volumes in {self.run_dir / 'masks'}")


def _finish_wandb() -> None:
    """End this command's W&B run so that the next run in the same process (a CV fold) gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_lightning_cli(args: list[str]) -> TumorlabCLI:
    """Run ``tumorlab fit|validate|test|predict`` with ``args`` (the subcommand first)."""
    user_args = list(args)
    args, tested = with_run_config(user_args)
    try:
        return TumorlabCLI(args, tested=tested, user_args=user_args)
    finally:
        _finish_wandb()


def run_command(argv: list[str]) -> int:
    """Run ``tumorlab fit|validate|test|predict`` in this process (``--model CNN9`` shorthand included); return
    its exit status: 0, or 2 after printing a user's error in one line (``tumorlab cv`` runs each fold so)."""
    try:
        run_lightning_cli(expand_model_shorthand(list(argv)))
    except Exception as err:
        return report_error(err)
    return 0


def run_predict(argv: list[str]) -> Path:
    """Run ``tumorlab predict`` in this process as ``tumorlab.cli.main.main`` would; return its run folder.

    ``TumorlabCLI`` is called directly, not through ``run_lightning_cli``: that one ends the active W&B run
    when it returns, which would end the W&B run of a ``tumorlab test`` that writes its report at the end.
    """
    quiet_known_noise()
    before = os.environ.get(RUN_DIR_ENV)
    try:
        args, tested = with_run_config(expand_model_shorthand(argv))
        return Path(TumorlabCLI(args, tested=tested, user_args=argv).run_dir)
    finally:  # the folder of the command that asked for the report stays the current one
        if before is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = before
