"""k-fold cross-validation by patient, run through the ``tumorlab`` command itself.

``tumorlab cv --config FILE --folds K [--KEY VALUE ...]`` runs, for k = 0 … K-1 in turn and in this process,

    tumorlab fit --config FILE [--KEY VALUE ...] --data.num_folds K --data.fold k \\
        --run.name <name>-cv/fold<k> --run.test_after_fit true

so each fold gets its own run folder ``<run.root>/<name>-cv/fold<k>/<time>_fit/`` with its own config, checkpoints
and ``run.json``. ``--print-commands`` prints these commands instead (for several machines or a scheduler);
``--collect`` then summarises the newest finished run of every fold.

What the folds are is the data layer's (``tumorlab.data.splits.make_splits``): the test patients are held out
first, as in a hold-out run (``split[2]`` of the patients, or duplicate groups, drawn with ``data.seed``; a
given test set where the data fixes one), so **every fold is tested on the same test patients**; the remaining
patients are cut into K folds by ``StratifiedGroupKFold`` (stratified by the data's strata, grouped by patient
merged with duplicate groups), and fold k validates on its part and trains on the other K-1.

The summary (``<run.root>/<name>-cv/<time>_cv/``: ``summary.md``, ``folds.csv``, ``summary.json``) lists each
fold's test metrics and the best value of the monitored validation metric (``val/<metric>_best``), with their
mean and **sample** standard deviation over folds (``ddof=1``). With one test set for all folds, the spread
measures how much the model changes with its training patients, not the sampling error of the test set.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from tumorlab.errors import ConfigError, TumorlabError
from tumorlab.runs.folders import new_run_dir

__all__ = [
    "cross_validate",
    "find_fold_run",
    "fold_args",
    "fold_commands",
    "fold_name",
    "format_summary",
    "run_settings",
    "summarise",
    "write_summary",
]

# Set by cross-validation itself for every fold; given by the user they would contradict it.
_RESERVED = ("--data.num_folds", "--data.fold", "--run.test_after_fit", "--data.init_args.num_folds",
             "--data.init_args.fold")  # fmt: skip


def _option(args: Sequence[str], key: str) -> str | None:
    """The last value of ``--key VALUE`` or ``--key=VALUE`` in ``args``."""
    value = None
    for i, arg in enumerate(args):
        if arg == key and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(key + "="):
            value = arg.split("=", 1)[1]
    return value


def _without(args: Sequence[str], key: str) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == key:
            skip = i + 1 < len(args)
        elif not arg.startswith(key + "="):
            out.append(arg)
    return out


def run_settings(configs: Sequence[str], overrides: Sequence[str]) -> tuple[Path, str]:
    """``(run.root, run.name)`` as ``fit`` will resolve them: the last config that sets each, then the overrides."""
    root, name = "runs", "default"
    for path in configs:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as err:
            raise ConfigError(f"--config {path}: cannot read it ({err.strerror})") from None
        run = tree.get("run") if isinstance(tree, dict) else None
        if isinstance(run, dict):
            root, name = str(run.get("root", root)), str(run.get("name", name))
    root = _option(overrides, "--run.root") or root
    name = _option(overrides, "--run.name") or name
    return Path(root).resolve(), name


def fold_name(name: str, k: int) -> str:
    """The ``run.name`` of fold ``k``: ``<name>-cv/fold<k>``."""
    return f"{name}-cv/fold{k}"


def _check(folds: int, overrides: Sequence[str]) -> None:
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    for key in _RESERVED:
        if _option(overrides, key) is not None:
            raise ConfigError(f"{key} is set by tumorlab cv for every fold; leave it out (use --folds)")


def fold_args(configs: Sequence[str], folds: int, k: int, overrides: Sequence[str]) -> list[str]:
    """The ``tumorlab`` arguments that train and test fold ``k`` of ``folds``."""
    _check(folds, overrides)
    _, name = run_settings(configs, overrides)
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), *_without(overrides, "--run.name")]
    return args + ["--data.num_folds", str(folds), "--data.fold", str(k), "--run.name", fold_name(name, k),
                   "--run.test_after_fit", "true"]  # fmt: skip


def fold_commands(configs: Sequence[str], folds: int, overrides: Sequence[str]) -> list[str]:
    """One shell command per fold (``tumorlab fit ...``), quoted for a POSIX shell."""
    return [shlex.join(["tumorlab", *fold_args(configs, folds, k, overrides)]) for k in range(folds)]


def _fit_runs(folder: Path) -> set[Path]:
    return {p for p in folder.glob("*_fit*") if (p / "run.json").is_file()} if folder.is_dir() else set()


def find_fold_run(root: Path, name: str, k: int, exclude: set[Path] = frozenset()) -> Path:
    """The newest fit run of fold ``k`` that recorded test metrics (not one of ``exclude``)."""
    folder = Path(root) / fold_name(name, k)
    finished = [
        p for p in _fit_runs(folder) - set(exclude) if json.loads((p / "run.json").read_text()).get("test_metrics")
    ]
    if not finished:
        raise TumorlabError(f"fold {k}: no finished run with test metrics under {folder}")
    return max(finished, key=lambda p: (p / "run.json").stat().st_mtime)


def cross_validate(
    configs: Sequence[str],
    folds: int,
    overrides: Sequence[str] = (),
    collect: bool = False,
    fit: Callable[[list[str]], int] | None = None,
) -> dict:
    """Train and test every fold in turn with ``fit`` (``tumorlab.cli.lightning.run_command``, handed in by the
    command: this package never imports the CLI) or, with ``collect``, only find the newest finished run of each;
    then write and return the summary (``summarise`` + ``out``)."""
    if fit is None and not collect:
        raise ConfigError("cross_validate needs fit (tumorlab.cli.lightning.run_command) unless collect is true")
    _check(folds, overrides)
    root, name = run_settings(configs, overrides)
    runs = []
    for k in range(folds):
        if collect:
            runs.append(find_fold_run(root, name, k))
            continue
        before = _fit_runs(root / fold_name(name, k))
        print(f"cross-validation: fold {k + 1} of {folds} ({fold_name(name, k)})", flush=True)
        code = fit(fold_args(configs, folds, k, overrides))
        if code:
            raise TumorlabError(f"fold {k} of {folds} failed (exit status {code}, see above); no summary written")
        runs.append(find_fold_run(root, name, k, exclude=before))
    summary = summarise(runs)
    # named and claimed as every run folder is (``<time>_cv``, ``_2`` ... in the same second)
    summary["out"] = str(write_summary(summary, new_run_dir(root, f"{name}-cv", "cv")))
    return summary


def _fold_metrics(run: Path) -> dict[str, float]:
    record = json.loads((run / "run.json").read_text())
    metrics = {f"test/{k}": float(v) for k, v in (record.get("test_metrics") or {}).items()}
    for monitor, value in (record.get("best_score") or {}).items():
        if monitor and monitor.startswith("val/") and value is not None:
            metrics[f"{monitor}_best"] = float(value)
    return metrics


def summarise(runs: Sequence[str | Path]) -> dict:
    """Per-fold metrics of the fold runs (in fold order) and the mean and sample std (ddof=1) of each metric
    that every fold recorded."""
    folds = [{"fold": k, "run": str(run), "metrics": _fold_metrics(Path(run))} for k, run in enumerate(runs)]
    if len(folds) < 2:
        raise ConfigError(f"a cross-validation summary needs at least 2 folds, got {len(folds)}")
    keys = [k for k in folds[0]["metrics"] if all(k in f["metrics"] for f in folds)]
    stats = {}
    for key in sorted(keys, key=lambda k: (not k.startswith("test/"), k)):
        values = np.array([f["metrics"][key] for f in folds], dtype=np.float64)
        stats[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "n": len(values)}
    return {"folds": folds, "metrics": stats, "std": "sample standard deviation over folds (ddof=1)"}


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def format_summary(summary: dict) -> str:
    """A Markdown table: one row per metric, one column per fold, then mean ± std (ddof=1)."""
    folds = summary["folds"]
    head = "| metric | " + " | ".join(f"fold {f['fold']}" for f in folds) + " | mean ± std |"
    lines = [head, "|" + "---|" * (len(folds) + 2)]
    for key, s in summary["metrics"].items():
        cells = " | ".join(_fmt(f["metrics"][key]) for f in folds)
        lines.append(f"| {key} | {cells} | {_fmt(s['mean'])} ± {_fmt(s['std'])} |")
    runs = "\n".join(f"- fold {f['fold']}: {f['run']}" for f in folds)
    out = f" -> {summary['out']}" if summary.get("out") else ""
    return f"{len(folds)}-fold cross-validation (std: {summary['std']}){out}\n\n" + "\n".join(lines) + f"\n\n{runs}"


def write_summary(summary: dict, out: str | Path) -> Path:
    """Write ``summary.md``, ``folds.csv`` (one row per fold) and ``summary.json`` into the new folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    (out / "summary.md").write_text(format_summary(summary) + "\n")
    keys = list(summary["metrics"])
    with open(out / "folds.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fold", "run", *keys])
        for fold in summary["folds"]:
            writer.writerow([fold["fold"], fold["run"], *(fold["metrics"][k] for k in keys)])
    (out / "summary.json").write_text(json.dumps(summary | {"out": str(out)}, indent=2) + "\n")
    return out
