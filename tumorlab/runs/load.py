"""Read a run folder back: its config and record, the fit run behind an evaluation, its predictions, its model.

``load_run(RUN)`` is the one way to rebuild a trained run in Python (reports, Grad-CAM, pruning, export,
latency): its task with the checkpoint's weights and its data module, channel-pruned networks included.

A run folder (``runs/<name>/<time>_<command>/``) holds ``config.yaml`` and ``run.json``; an evaluation run
(``test``, ``validate``, ``predict``) records the fit run it evaluated as ``tested`` and the checkpoint as
``checkpoint``. Training facts (``metrics.csv``, training time, epochs) live in the fit run.
"""

from __future__ import annotations

import copy
import csv
import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tumorlab.errors import ConfigError, DataError
from tumorlab.runs.predictions import prob_classes

# Runs `tumorlab predict` with these arguments and returns its run folder. The CLI side passes one in
# (tumorlab.cli.lightning.run_predict): evaluation never imports the CLI.
PredictRunner = Callable[[list[str]], Path]

__all__ = [
    "LoadedRun",
    "RunFolder",
    "build_run",
    "is_run_dir",
    "load_run",
    "load_weights",
    "predictions_of",
    "read_predictions",
    "read_run",
    "resolve_run",
]


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
    if not rows or "true_class" not in rows[0] or not prob_classes(rows[0]):
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


def predictions_of(run: RunFolder, predict: PredictRunner | None = None) -> tuple[Path, Path | None]:
    """``(predictions.csv of the run folder, the predict run that wrote it or None)``.

    A test writes its own (``rows.TestPredictions``); a run folder without one (a fit that was not tested, a
    test run from before) gets one from ``predict`` (``tumorlab predict``, run by the caller; without it a
    ``DataError`` gives the command to run) on the checkpoint the run evaluated (its best one for a fit), on
    the test split (the validation split for a ``validate`` run), with the evaluation's own command line (its
    data overrides included); its file is copied into the run folder and its own run folder (beside the fit run,
    ``<time>_predict``) stays as the record of how it was made.
    """
    target = run.path / "predictions.csv"
    if target.is_file():
        return target, None
    checkpoint = run.checkpoint()
    if checkpoint is None:
        raise DataError(f"{run.path}: no predictions.csv and no checkpoint to produce it from")
    argv = _predict_argv(run, checkpoint)
    if predict is None:
        raise DataError(
            f"{run.path}: no predictions.csv; make it with `{shlex.join(['tumorlab', *argv])}` "
            f"or run `tumorlab report {run.path}`"
        )
    made = predict(argv) / "predictions.csv"
    if not made.is_file():
        raise DataError(f"{run.path}: `tumorlab predict --ckpt_path {checkpoint}` wrote no predictions.csv")
    shutil.copy2(made, target)
    return target, made.parent


@dataclass
class LoadedRun:
    """A run rebuilt from its folder.

    Args:
        task: the task with the checkpoint's weights, in eval mode on the CPU.
        datamodule: the run's data module, not set up yet.
        config: ``config.yaml`` as a dict.
        run_dir: the run folder.
        checkpoint: the checkpoint file the weights come from.

    ``task, datamodule = load_run(...)`` unpacks the two that most callers need.
    """

    task: Any
    datamodule: Any
    config: dict[str, Any]
    run_dir: Path
    checkpoint: Path

    def __iter__(self):
        return iter((self.task, self.datamodule))


def resolve_run(ckpt_path: str | Path) -> tuple[Path, Path]:
    """``(run folder, checkpoint file)`` of ``--ckpt_path``: a run folder and the checkpoint it names
    (``RunFolder.checkpoint``: the evaluated one of a test run, the best one of a fit, else ``last.ckpt``), or a
    ``.ckpt`` file and the run folder it lies in (``RUN/checkpoints/x.ckpt``). A run folder that moved still
    works: a recorded checkpoint that is gone is looked up in its ``checkpoints/`` by name."""
    path = Path(ckpt_path)
    if path.is_file() and path.suffix == ".ckpt":
        return read_run(path.parent.parent).path, path
    if not path.exists():
        raise ConfigError(f"--ckpt_path {path}: no such run folder or checkpoint file")
    run = read_run(path)
    if run.command == "ensemble":  # its first member's checkpoint; load_run rebuilds every member
        return run.path, Path(run.record["members"][0]["checkpoint"])
    # an evaluation names the checkpoint it evaluated; a fit (or a pruned model's folder) its best one
    evaluated = run.record.get("checkpoint") if run.command in ("test", "validate", "predict") else None
    recorded = evaluated or run.record.get("best_checkpoint")
    chosen = None
    if recorded:
        moved = (run.fit_dir or run.path) / "checkpoints" / Path(recorded).name
        chosen = recorded if Path(recorded).is_file() else (str(moved) if moved.is_file() else None)
    chosen = chosen or run.checkpoint()  # nothing recorded, or gone: last.ckpt
    if chosen is None:
        raise ConfigError(f"--ckpt_path {run.path}: no checkpoint (recorded: {recorded}; no checkpoints/last.ckpt)")
    return run.path, Path(chosen)


def load_run(
    ckpt_path: str | Path, weights: bool = True, data_root: str | None = None, checkpoint: str | Path | None = None
) -> LoadedRun:
    """Rebuild the run that ``ckpt_path`` names (a run folder or a checkpoint in one, ``resolve_run``).

    The config is instantiated as ``tumorlab`` does (jsonargparse, the data module's sizes linked into the
    network with ``links.link_net_args``), so a channel-pruned network (``ChannelPruned`` in the config) is
    rebuilt narrowed; the normalisation applied in training is in the saved ``data.normalize``. Pretrained
    weights (``encoder_weights``, ``pretrained``, ``weights_file``) are not downloaded or read: the checkpoint
    replaces them. A test of the model on other classes (``data.model_classes``) is scored as that test was
    (``crossdata.adapt_task``).

    Args:
        ckpt_path: a run folder or a checkpoint file inside ``RUN/checkpoints/``.
        weights: load the checkpoint's weights (``False``: the freshly initialised model).
        data_root: replaces ``data.init_args.root`` (the run's data moved).
        checkpoint: a checkpoint file to read instead of the one ``ckpt_path`` names.

    The checkpoint is read with ``torch.load(weights_only=True)``; weights that are missing or of another
    shape are a ``ConfigError`` naming the first of them.
    """
    from tumorlab.runs.crossdata import class_mapping, collapse_to_binary

    run_dir, found = resolve_run(ckpt_path)
    folder = read_run(run_dir)
    if folder.command == "ensemble":
        return _load_ensemble(folder, weights, data_root)
    checkpoint = Path(checkpoint) if checkpoint is not None else found
    config = folder.config
    if "model" not in config or "data" not in config:
        raise ConfigError(f"{run_dir / 'config.yaml'}: no model or data section; not a config that fit saved")
    task, datamodule = build_run(config, data_root)
    if weights:
        load_weights(task, checkpoint)
    mapping = class_mapping(datamodule)
    if mapping is not None and mapping["binary_from_model_outputs"]:
        collapse_to_binary(task, mapping["model_classes"])
    return LoadedRun(task.eval(), datamodule, config, run_dir, checkpoint)


def build_run(config: dict[str, Any], data_root: str | None = None) -> tuple[Any, Any]:
    """``(task, data module)`` of a run's config (``config.yaml`` as a dict), freshly initialised.

    Instantiated as ``tumorlab`` does (jsonargparse, the data module's sizes linked into the network with
    ``links.link_net_args``); pretrained starting weights are neither downloaded nor read (``load_run`` loads a
    checkpoint next). ``data_root`` replaces ``data.init_args.root``. The data module is not set up.
    """
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule, LightningModule

    import tumorlab.data.modules  # noqa: F401  (short class names in configs)
    import tumorlab.models  # noqa: F401
    import tumorlab.tasks  # noqa: F401
    from tumorlab.links import link_net_args
    from tumorlab.models.weights import from_checkpoint

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    parser.add_subclass_arguments(LightningModule, "model")
    link_net_args(parser)
    model, data = copy.deepcopy(config["model"]), copy.deepcopy(config["data"])
    _no_starting_weights(model)  # the checkpoint holds every weight: fetching pretrained ones would only fail offline
    if data_root is not None:
        data.setdefault("init_args", {})["root"] = str(data_root)
    with from_checkpoint():  # weights files, init_from: the checkpoint replaces them, they may be gone
        built = parser.instantiate(parser.parse_object({"data": data, "model": model}))
    return built.model, built.data


def _load_ensemble(run: RunFolder, weights: bool, data_root: str | None) -> LoadedRun:
    """An ensemble run folder (``tumorlab ensemble``): every member rebuilt, joined by ``EnsembleNet`` with the
    recorded test-time augmentations, and the first member's data module."""
    from tumorlab.models.ensemble import ensemble_task

    members = [
        load_run(m["run"], weights=weights, data_root=data_root, checkpoint=m["checkpoint"])
        for m in run.record["members"]
    ]
    task = ensemble_task([m.task for m in members], run.record.get("tta") or ())
    return LoadedRun(task, members[0].datamodule, run.config, run.path, members[0].checkpoint)


def load_weights(task: Any, checkpoint: str | Path) -> None:
    """Load a Lightning checkpoint's ``state_dict`` into ``task``: every network weight must be there and of
    its shape (``ConfigError`` otherwise); other entries (metric states, buffers not saved) may differ."""
    import torch

    from tumorlab.runs.folders import check_checkpoint

    check_checkpoint(checkpoint)  # a truncated or pickle-carrying file: one line, never a torch traceback
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    own = task.state_dict()
    missing = [k for k in own if k.startswith("net.") and k not in state]
    extra = [k for k in state if k.startswith("net.") and k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or wrong:
        first = (
            [f"{k} is missing" for k in missing[:1]]
            + [f"{k} is not in the model" for k in extra[:1]]
            + [f"{k} is {list(state[k].shape)} there, {list(own[k].shape)} here" for k in wrong[:1]]
        )[0]
        raise ConfigError(
            f"{checkpoint}: its weights do not fit the model of the run's config.yaml ({first}; "
            f"{len(missing) + len(extra) + len(wrong)} tensors in all); a checkpoint of another model type?"
        )
    task.load_state_dict(state, strict=False)


# Network arguments that fetch starting weights; the checkpoint replaces them all, so nothing is downloaded.
_STARTING_WEIGHTS = {"pretrained": False, "weights_file": None, "encoder_weights": None}
# Read only outside models.weights.from_checkpoint; kept as configured, since they also set the normalisation
# (encoder_weights_file) or are a record of the run (init_from).


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
