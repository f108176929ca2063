"""Read a run folder back: its config and record, the fit run behind an evaluation, its predictions, its model.

A run folder (``runs/<name>/<time>_<command>/``) holds ``config.yaml`` and ``run.json``; an evaluation run
(``test``, ``validate``, ``predict``) records the fit run it evaluated as ``tested`` and the checkpoint as
``checkpoint``. Training facts (``metrics.csv``, training time, epochs) live in the fit run.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tumorlab.errors import DataError

__all__ = ["RunFolder", "is_run_dir", "load_model", "predictions_of", "read_predictions", "read_run"]


@dataclass
class RunFolder:
    """What a run folder says about itself.

    Args:
        path: the run folder.
        config: ``config.yaml`` as a dict (the resolved config of the command).
        record: ``run.json`` as a dict.
        fit_dir: the fit run with the training facts: the folder itself for a fit, ``tested`` for an
            evaluation (``None`` where it is not recorded or no longer exists).
    """

    path: Path
    config: dict[str, Any]
    record: dict[str, Any]
    fit_dir: Path | None

    @property
    def command(self) -> str:
        """``fit``, ``test``, ``validate`` or ``predict``."""
        return str(self.record.get("command") or self.path.name.rsplit("_", 1)[-1])

    @property
    def fit_record(self) -> dict[str, Any]:
        """``run.json`` of the fit run (empty where there is none)."""
        if self.fit_dir is None:
            return {}
        return json.loads((self.fit_dir / "run.json").read_text())

    def checkpoint(self) -> str | None:
        """The checkpoint this run evaluated (evaluations) or its best one (fits), else ``last.ckpt``."""
        chosen = self.record.get("checkpoint") if self.command != "fit" else self.record.get("best_checkpoint")
        if chosen and Path(chosen).is_file():
            return str(chosen)
        last = (self.fit_dir or self.path) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``config.yaml`` and ``run.json``."""
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "run.json").is_file()


def read_run(path: str | Path) -> RunFolder:
    """Read the run folder ``path``; ``DataError`` naming it when it is not one."""
    path = Path(path).resolve()
    if not is_run_dir(path):
        raise DataError(f"{path}: not a run folder (expected config.yaml and run.json in it)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        record = json.loads((path / "run.json").read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable config.yaml or run.json ({err})") from err
    if record.get("command") == "fit" or (path / "metrics.csv").is_file():
        fit_dir: Path | None = path
    else:
        tested = record.get("tested")
        fit_dir = Path(tested) if tested and is_run_dir(tested) else None
    return RunFolder(path=path, config=config, record=record, fit_dir=fit_dir)


def read_predictions(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``predictions.csv`` (strings as written); ``DataError`` for an empty or headless file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "true_class" not in rows[0] or not any(k.startswith("prob_") for k in rows[0]):
        raise DataError(f"{path}: no prediction rows with true_class and prob_<class> columns")
    return rows


def _predict_argv(run: RunFolder, checkpoint: str) -> list[str]:
    """``tumorlab predict`` arguments that repeat this run's evaluation (its split: val for ``validate``)."""
    argv = list(run.record.get("argv") or [])[2:] if run.command != "fit" else []
    # Test-only options have no meaning for predict; W&B gets no run for a report's helper.
    argv = [a for a in argv if a.split("=", 1)[0] != "--verbose"]
    split = "val" if run.command == "validate" else "test"  # the split the run evaluated
    # One process: a DDP launcher would start this report's own command line again in each new process.
    single = ["--trainer.devices", "1", "--trainer.num_nodes", "1", "--trainer.strategy", "auto"]
    return [
        "predict",
        *argv,
        "--ckpt_path",
        checkpoint,
        "--data.predict_split",
        split,
        *single,
        "--trainer.logger",
        "false",
    ]


def _run_predict(argv: list[str]) -> Path:
    """Run ``tumorlab predict`` in this process as ``tumorlab.cli.main`` would; return its run folder.

    ``TumorlabCLI`` is called directly, not through ``run_lightning_cli``: that one ends the active W&B run
    when it returns, which would end the W&B run of a ``tumorlab test`` that writes its report at the end.
    """
    from tumorlab.cli import expand_model_shorthand
    from tumorlab.lightning_cli import TumorlabCLI
    from tumorlab.quiet import quiet_known_noise
    from tumorlab.run_config import with_run_config
    from tumorlab.runs import RUN_DIR_ENV

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


def predictions_of(run: RunFolder) -> tuple[Path, Path | None]:
    """``(predictions.csv of the run folder, the predict run that wrote it or None)``.

    A run folder without ``predictions.csv`` (a fit or a plain ``test``) gets one: ``tumorlab predict`` runs
    in this process on the checkpoint the run evaluated (its best one for a fit), on the test split (the
    validation split for a ``validate`` run), with the evaluation's own command line (its data overrides
    included); its file is copied into the run folder and its own run folder (beside the fit run,
    ``<time>_predict``) stays as the record of how it was made.
    """
    target = run.path / "predictions.csv"
    if target.is_file():
        return target, None
    checkpoint = run.checkpoint()
    if checkpoint is None:
        raise DataError(f"{run.path}: no predictions.csv and no checkpoint to produce it from")
    made = _run_predict(_predict_argv(run, checkpoint)) / "predictions.csv"
    if not made.is_file():
        raise DataError(f"{run.path}: `tumorlab predict --ckpt_path {checkpoint}` wrote no predictions.csv")
    shutil.copy2(made, target)
    return target, made.parent


def load_model(run: RunFolder, checkpoint: str | None = None, data_root: str | None = None):
    """``(task, datamodule)`` of a run, rebuilt from its ``config.yaml`` with the checkpoint's weights.

    The config is instantiated as ``tumorlab`` does (jsonargparse, the data module's sizes linked into the
    network); the normalisation applied in training is in the saved ``data.normalize``. Pretrained weights
    (``encoder_weights``, ``pretrained``, ``weights_file``) are not downloaded or read: the checkpoint replaces
    them. ``data_root`` replaces ``data.init_args.root`` (the run's data moved). The data module is not set up;
    the task is in eval mode on the CPU. The checkpoint is read with ``torch.load(weights_only=True)``.
    """
    import torch
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    import tumorlab.data  # noqa: F401  (short class names in configs)
    import tumorlab.models  # noqa: F401
    import tumorlab.tasks  # noqa: F401
    from tumorlab.links import link_net_args

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    parser.add_subclass_arguments(LightningModule, "model")
    link_net_args(parser)
    model, data = copy.deepcopy(run.config["model"]), copy.deepcopy(run.config["data"])
    _no_starting_weights(model)  # the checkpoint holds every weight: fetching pretrained ones would only fail offline
    if data_root is not None:
        data.setdefault("init_args", {})["root"] = str(data_root)
    parsed = parser.parse_object({"data": data, "model": model})
    built = parser.instantiate(parsed)
    checkpoint = checkpoint or run.checkpoint()
    if checkpoint is None:
        raise DataError(f"{run.path}: no checkpoint to load the model from")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    built.model.load_state_dict(state, strict=False)  # metric states may differ; the weights must not
    missing = [k for k in built.model.state_dict() if k.startswith("net.") and k not in state]
    if missing:
        raise DataError(f"{checkpoint}: the checkpoint lacks weights of the run's network ({missing[0]}, ...)")
    return built.model.eval(), built.data


# Network arguments that fetch starting weights; the checkpoint replaces them all, so nothing is downloaded.
_STARTING_WEIGHTS = {"pretrained": False, "weights_file": None, "encoder_weights": None}


def _no_starting_weights(node) -> None:
    """Turn off pretrained starting weights in every ``init_args`` below ``node`` (a config dict)."""
    if isinstance(node, dict):
        args = node.get("init_args")
        if isinstance(args, dict):
            for key, value in _STARTING_WEIGHTS.items():
                if key in args:
                    args[key] = value
        for child in node.values():
            _no_starting_weights(child)
