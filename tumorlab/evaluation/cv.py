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

``tumorlab cv --config FILE --group KEY`` holds out one group per fold instead (leave-one-group-out, e.g. one
institution: ``KEY`` is ``institution`` for LGG data, any column of a manifest): the groups are read from the
data the config names, and the fold of group ``V`` runs ``fit ... --data.test_group_by KEY --data.test_group V
--run.name <name>-cv/<KEY>-<V>``: it tests on every sample of ``V`` and trains and validates (by ``split``'s
train:val ratio) on the other groups. The summary names each fold by its group, so the per-fold columns are the
per-group metrics (each from another model), and adds ``pooled``: the metrics of all folds' test predictions
together (every sample predicted once, by the model that did not see its group).
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
    "group_fold_args",
    "group_fold_name",
    "group_folds",
    "pooled_metrics",
    "format_summary",
    "run_settings",
    "summarise",
    "write_summary",
]

# Set by cross-validation itself for every fold; given by the user they would contradict it.
_RESERVED = ("--data.num_folds", "--data.fold", "--run.test_after_fit", "--data.init_args.num_folds",
             "--data.init_args.fold", "--data.test_group_by", "--data.test_group", "--data.init_args.test_group_by",
             "--data.init_args.test_group")  # fmt: skip
# The overall metrics of a pooled predictions.csv (evaluation.metrics) under the names the fold runs log.
_POOLED = {"accuracy": "test/acc", "precision": "test/precision", "recall": "test/recall", "f1": "test/f1",
           "f2": "test/f2", "auroc": "test/auroc", "mean_slice_dice": "test/mean_slice_dice"}  # fmt: skip


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


def group_fold_name(name: str, key: str, value: str) -> str:
    """The ``run.name`` of the fold that holds out group ``value`` of ``key``: ``<name>-cv/<key>-<value>``."""
    return f"{name}-cv/{key}-{value}"


def _check(folds: int | None, overrides: Sequence[str]) -> None:
    if folds is not None and folds < 2:
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


def group_fold_args(configs: Sequence[str], key: str, value: str, overrides: Sequence[str]) -> list[str]:
    """The ``tumorlab`` arguments that train on the other groups and test on group ``value`` of ``key``."""
    _check(None, overrides)
    _, name = run_settings(configs, overrides)
    args = ["fit", *(a for c in configs for a in ("--config", str(c))), *_without(overrides, "--run.name")]
    return args + ["--data.test_group_by", key, "--data.test_group", value, "--run.name",
                   group_fold_name(name, key, value), "--run.test_after_fit", "true"]  # fmt: skip


def _data_overrides(overrides: Sequence[str]) -> list[str]:
    """The ``--data...`` options (with their values) among ``overrides``."""
    out, i = [], 0
    while i < len(overrides):
        arg = overrides[i]
        if arg.split("=", 1)[0].split(".", 1)[0] == "--data":
            step = 1 if "=" in arg or i + 1 == len(overrides) else 2
            out += overrides[i : i + step]
            i += step
        else:
            i += 1
    return out


def group_folds(configs: Sequence[str], overrides: Sequence[str], key: str) -> list[dict]:
    """One fold per value of ``key`` in the data the configs (and ``--data`` overrides) name, in sorted order:
    ``{"value", "patients", "samples"}`` of the group held out (``splits.leave_one_group_out``).

    The data module is built as ``fit`` builds it (jsonargparse) and lists its samples; no file is decoded.
    """
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    import tumorlab.data.modules  # noqa: F401  (short class names in configs)
    from tumorlab.data.splits import leave_one_group_out

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    args = []
    for path in configs:
        tree = yaml.safe_load(Path(path).read_text()) or {}
        if isinstance(tree, dict) and tree.get("data") is not None:
            args += ["--data", json.dumps(tree["data"])]
    if not args:
        raise ConfigError(f"--group {key}: no data section in {', '.join(map(str, configs))}")
    data = parser.instantiate(parser.parse_args(args + _data_overrides(overrides))).data
    values = np.asarray(data.group_values(key), dtype=str)
    patients = np.asarray([s.patient for s in data.samples])
    folds = leave_one_group_out(values, f"--group {key}")
    return [{"value": v, "patients": len(set(patients[idx].tolist())), "samples": len(idx)} for v, idx in folds.items()]


def fold_commands(
    configs: Sequence[str], folds: int | None, overrides: Sequence[str], group: str | None = None
) -> list[str]:
    """One shell command per fold (``tumorlab fit ...``), quoted for a POSIX shell."""
    if group is not None:
        return [shlex.join(["tumorlab", *group_fold_args(configs, group, f["value"], overrides)])
                for f in group_folds(configs, overrides, group)]  # fmt: skip
    return [shlex.join(["tumorlab", *fold_args(configs, folds, k, overrides)]) for k in range(folds)]


def _fit_runs(folder: Path) -> set[Path]:
    return {p for p in folder.glob("*_fit*") if (p / "run.json").is_file()} if folder.is_dir() else set()


def find_fold_run(root: Path, name: str, k: int | str, exclude: set[Path] = frozenset()) -> Path:
    """The newest fit run of fold ``k`` (or of the fold whose ``run.name`` is ``k``) that recorded test metrics
    (not one of ``exclude``)."""
    folder = Path(root) / (fold_name(name, k) if isinstance(k, int) else k)
    finished = [
        p for p in _fit_runs(folder) - set(exclude) if json.loads((p / "run.json").read_text()).get("test_metrics")
    ]
    if not finished:
        raise TumorlabError(f"fold {k}: no finished run with test metrics under {folder}")
    return max(finished, key=lambda p: (p / "run.json").stat().st_mtime)


def cross_validate(
    configs: Sequence[str],
    folds: int | None,
    overrides: Sequence[str] = (),
    collect: bool = False,
    fit: Callable[[list[str]], int] | None = None,
    group: str | None = None,
) -> dict:
    """Train and test every fold in turn with ``fit`` (``tumorlab.cli.lightning.run_command``, handed in by the
    command: this package never imports the CLI) or, with ``collect``, only find the newest finished run of each;
    then write and return the summary (``summarise`` + ``out``). ``group`` (instead of ``folds``) holds out one
    group of that key per fold (``group_folds``)."""
    if fit is None and not collect:
        raise ConfigError("cross_validate needs fit (tumorlab.cli.lightning.run_command) unless collect is true")
    if (folds is None) == (group is None):
        raise ConfigError("give --folds K (k-fold by patient) or --group KEY (leave one group out), not both")
    _check(folds, overrides)
    root, name = run_settings(configs, overrides)
    groups = group_folds(configs, overrides, group) if group is not None else None
    plan = (
        [(fold_name(name, k), fold_args(configs, folds, k, overrides)) for k in range(folds)]
        if groups is None
        else [(group_fold_name(name, group, g["value"]), group_fold_args(configs, group, g["value"], overrides))
              for g in groups]
    )  # fmt: skip
    runs = []
    for k, (run_name, args) in enumerate(plan):
        if collect:
            runs.append(find_fold_run(root, name, run_name))
            continue
        before = _fit_runs(root / run_name)
        print(f"cross-validation: fold {k + 1} of {len(plan)} ({run_name})", flush=True)
        code = fit(args)
        if code:
            raise TumorlabError(f"fold {k} of {len(plan)} failed (exit status {code}, see above); no summary written")
        runs.append(find_fold_run(root, name, run_name, exclude=before))
    summary = summarise(runs, groups=None if groups is None else [g | {"key": group} for g in groups])
    # named and claimed as every run folder is (``<time>_cv``, ``_2`` ... in the same second)
    summary["out"] = str(write_summary(summary, new_run_dir(root, f"{name}-cv", "cv")))
    return summary


def _fold_metrics(run: Path) -> dict[str, float]:
    record = json.loads((run / "run.json").read_text())
    # an undefined metric is null in run.json: NaN here, so that its mean over the folds says so
    metrics = {f"test/{k}": math.nan if v is None else float(v) for k, v in (record.get("test_metrics") or {}).items()}
    for monitor, value in (record.get("best_score") or {}).items():
        if monitor and monitor.startswith("val/") and value is not None:
            metrics[f"{monitor}_best"] = float(value)
    return metrics


def summarise(runs: Sequence[str | Path], groups: Sequence[dict] | None = None) -> dict:
    """Per-fold metrics of the fold runs (in fold order) and the mean and sample std (ddof=1) of each metric
    that every fold recorded. With ``groups`` (one ``{"key", "value", "patients", "samples"}`` per run: a
    leave-one-group-out cv) each fold is named by its group and ``pooled`` holds the metrics of all folds' test
    predictions together."""
    folds = [{"fold": k, "run": str(run), "metrics": _fold_metrics(Path(run))} for k, run in enumerate(runs)]
    if len(folds) < 2:
        raise ConfigError(f"a cross-validation summary needs at least 2 folds, got {len(folds)}")
    keys = [k for k in folds[0]["metrics"] if all(k in f["metrics"] for f in folds)]
    stats = {}
    for key in sorted(keys, key=lambda k: (not k.startswith("test/"), k)):
        values = np.array([f["metrics"][key] for f in folds], dtype=np.float64)
        stats[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "n": len(values)}
    summary = {"folds": folds, "metrics": stats, "std": "sample standard deviation over folds (ddof=1)"}
    if groups is not None:
        for fold, group in zip(folds, groups, strict=True):
            fold["group"] = dict(group)
        summary["pooled"] = pooled_metrics(runs)
    return summary


def pooled_metrics(runs: Sequence[str | Path]) -> dict[str, float | None]:
    """The overall metrics of the test rows of every run's ``predictions.csv`` together (``evaluation.metrics``),
    under the names the runs log (``test/acc`` ...); a sample predicted by two runs is refused."""
    from tumorlab.evaluation.metrics import compute_metrics, parse_predictions
    from tumorlab.runs.load import read_predictions

    rows, seen = [], {}
    for run in runs:
        path = Path(run) / "predictions.csv"
        if not path.is_file():
            raise TumorlabError(f"{run}: no predictions.csv to pool (a fold run tested with --run.test_after_fit)")
        for row in read_predictions(path):
            if row.get("split", "test") not in ("test", ""):
                continue
            if row["file"] in seen:
                raise TumorlabError(f"{row['file']} is a test sample of {seen[row['file']]} and of {run}; not pooled")
            seen[row["file"]] = run
            rows.append(row)
    overall = compute_metrics(parse_predictions(rows))["overall"]
    return {name: overall.get(key) for key, name in _POOLED.items() if key in overall} | {"samples": len(rows)}


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _label(fold: dict) -> str:
    group = fold.get("group")
    if group is None:
        return f"fold {fold['fold']}"
    return f"{group['key']} {group['value']} ({group['patients']} patients, {group['samples']} samples)"


def format_summary(summary: dict) -> str:
    """A Markdown table: one row per metric, one column per fold (per held-out group), then mean ± std (ddof=1)
    and, for a leave-one-group-out cv, the pooled value."""
    folds, pooled = summary["folds"], summary.get("pooled")
    head = "| metric | " + " | ".join(_label(f) for f in folds) + " | mean ± std |" + (" pooled |" if pooled else "")
    lines = [head, "|" + "---|" * (len(folds) + 2 + bool(pooled))]
    for key, s in summary["metrics"].items():
        cells = " | ".join(_fmt(f["metrics"][key]) for f in folds)
        extra = "" if not pooled else f" {_fmt(pooled[key]) if pooled.get(key) is not None else '–'} |"
        lines.append(f"| {key} | {cells} | {_fmt(s['mean'])} ± {_fmt(s['std'])} |{extra}")
    runs = "\n".join(f"- {_label(f)}: {f['run']}" for f in folds)
    out = f" -> {summary['out']}" if summary.get("out") else ""
    if pooled:
        key = folds[0]["group"]["key"]
        title = f"leave-one-{key}-out cross-validation, {len(folds)} folds"
        note = (f"\n\npooled: all {pooled['samples']} test predictions together, each by the model that did not "
                f"see its {key}")  # fmt: skip
    else:
        title, note = f"{len(folds)}-fold cross-validation", ""
    return f"{title} (std: {summary['std']}){out}\n\n" + "\n".join(lines) + f"{note}\n\n{runs}"


def write_summary(summary: dict, out: str | Path) -> Path:
    """Write ``summary.md``, ``folds.csv`` (one row per fold) and ``summary.json`` into the new folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    (out / "summary.md").write_text(format_summary(summary) + "\n")
    keys = list(summary["metrics"])
    with open(out / "folds.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fold", "group", "run", *keys])
        for fold in summary["folds"]:
            group = (fold.get("group") or {}).get("value", "")
            writer.writerow([fold["fold"], group, fold["run"], *(fold["metrics"][k] for k in keys)])
    (out / "summary.json").write_text(json.dumps(summary | {"out": str(out)}, indent=2) + "\n")
    return out
