"""Evaluate a run as it was trained: ``test``, ``validate`` and ``predict`` start from the run's own config.

``tumorlab test --ckpt_path RUN_FOLDER`` (or a checkpoint inside ``RUN_FOLDER/checkpoints/``) reads
``RUN_FOLDER/config.yaml`` first; further ``--config`` files and ``--key value`` overrides apply on top of it.
Where the result disagrees with the run's config on anything that changes the numbers (the data module, image
size, channels, normalisation, classes, brain crop, the model), the command stops with one line naming the
keys and both values, unless those keys were set on the command line as ``--data.*`` on purpose (a
cross-data-set test): then it prints which keys differ and goes on. The data is then read as the model's
classes, with the class mapping printed, and ``--data.binary true`` scores a 4-class model as tumour / no
tumour (``tumorlab.runs.crossdata``); the report counts the test images that are near-copies of the
training images (``tumorlab.evaluation.nearcopies``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from tumorlab.errors import ConfigError

__all__ = [
    "RESULT_KEYS",
    "check_against_run",
    "ckpt_argument",
    "newest_finished_fit",
    "run_folder_of",
    "with_run_config",
]

# Config keys whose value changes what a model computes on the test data.
RESULT_KEYS = (
    "data.class_path",
    "data.init_args.image_size",
    "data.init_args.channels",
    "data.init_args.normalize",
    "data.init_args.brain_crop",
    "data.init_args.classes",
    "data.init_args.binary",
    "data.init_args.task",
    "model.class_path",
    "model.init_args.net.class_path",
    "model.init_args.net.init_args",
)


def ckpt_argument(argv: list[str]) -> str | None:
    """The last ``--ckpt_path`` value on the command line, if any."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
    return value


def run_folder_of(ckpt: str | None) -> Path | None:
    """The run folder (holding ``config.yaml``) that ``ckpt`` names or lies in, else ``None``."""
    if not ckpt:
        return None
    path = Path(ckpt)
    for folder in (path, path.parent.parent) if path.suffix == ".ckpt" else (path,):
        if (folder / "config.yaml").is_file() and (folder / "run.json").is_file():
            return folder.resolve()
    return None


def with_run_config(argv: list[str]) -> tuple[list[str], Path | None]:
    """``argv`` with ``--config RUN/config.yaml`` put first after the subcommand, and the run folder."""
    if not argv or argv[0] not in ("validate", "test", "predict"):
        return argv, None
    ckpt = ckpt_argument(argv)
    if ckpt and ckpt not in ("best", "last", "hpc", "registry") and not Path(ckpt).exists():
        raise ConfigError(f"--ckpt_path {ckpt}: no such checkpoint file or run folder")
    run = run_folder_of(ckpt)
    if run is None and ckpt and Path(ckpt).is_dir():
        run = newest_finished_fit(Path(ckpt))
        if run is not None:
            print(f"tumorlab: note: --ckpt_path {ckpt} holds several runs; evaluating its newest finished fit {run}",
                  file=sys.stderr)  # fmt: skip
            argv = _with_ckpt(argv, str(run))
    if run is None:
        return argv, None
    if json.loads((run / "run.json").read_text()).get("command") == "ensemble":
        raise ConfigError(
            f"--ckpt_path {run}: an ensemble of several runs; {argv[0]} evaluates one model (run `tumorlab ensemble` "
            "on its members again, or `tumorlab report` on it)"
        )
    return [argv[0], "--config", str(run / "config.yaml"), *argv[1:]], run


def newest_finished_fit(folder: Path) -> Path | None:
    """The newest fit run folder under an experiment's folder (``runs/<name>``) that finished (its run.json records
    the epochs trained), or ``None`` where ``folder`` holds no run folders; a folder with runs but no finished fit
    is a ``ConfigError`` listing them."""
    runs = sorted(p for p in folder.iterdir() if (p / "run.json").is_file() and (p / "config.yaml").is_file())
    if not runs:
        return None
    finished = [p for p in runs if _finished_fit(p)]
    if not finished:
        names = ", ".join(p.name for p in runs)
        raise ConfigError(f"--ckpt_path {folder}: no finished fit among its run folders ({names}); name one of them")
    return max(finished, key=lambda p: p.name).resolve()  # folder names start with their time: the newest sorts last


def _finished_fit(run: Path) -> bool:
    try:
        record = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("command") == "fit" and record.get("epochs") is not None  # epochs: written when fit ends


def _with_ckpt(argv: list[str], value: str) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ckpt_path" and i + 1 < len(out):
            out[i + 1] = value
        elif arg.startswith("--ckpt_path="):
            out[i] = f"--ckpt_path={value}"
    return out


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _differences(given: dict, trained: dict) -> list[tuple[str, Any, Any]]:
    out = []
    for key in RESULT_KEYS:
        now, then = _get(given, key), _get(trained, key)
        if key.endswith("net.init_args"):  # compare what the run saved (linked sizes are not saved)
            for name, value in (then or {}).items():
                if (now or {}).get(name) != value:
                    out.append((f"{key}.{name}", (now or {}).get(name), value))
        elif now != then and then is not None:
            out.append((key, now, then))
    return out


def _set_on_command_line(key: str, argv: list[str]) -> bool:
    """Whether ``--data.X`` (or ``--data.init_args.X``, ``--data``) was typed for config key ``data.[init_args.]X``."""
    short = key.replace(".init_args.", ".")
    names = {f"--{key}", f"--{short}"} if key != "data.class_path" else {"--data"}
    return any(arg.split("=", 1)[0] in names for arg in argv)


def check_against_run(config: dict, run: Path, argv: list[str]) -> list[tuple[str, Any, Any]]:
    """Compare the resolved ``config`` with the run's own; stop or note as the module docstring says."""
    trained = yaml.safe_load((run / "config.yaml").read_text())
    config = json.loads(json.dumps(config, default=str))  # tuples as lists, as in the saved YAML
    differences = _differences(config, trained)
    on_purpose = [d for d in differences if d[0].startswith("data.") and _set_on_command_line(d[0], argv)]
    refused = [d for d in differences if d not in on_purpose]
    if refused:
        listed = "; ".join(f"{k} is {now!r} here but {then!r} in the run" for k, now, then in refused)
        raise ConfigError(
            f"the config disagrees with the run it evaluates ({run / 'config.yaml'}): {listed}; drop the extra "
            "--config (the run's own config is used), or set data keys on the command line (e.g. --data.root) "
            "to evaluate on other data on purpose"
        )
    for key, now, then in on_purpose:
        print(f"tumorlab: note: {key} is {now!r} for this evaluation ({then!r} when the run trained)", file=sys.stderr)
    return differences
