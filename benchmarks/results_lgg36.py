"""The 36 LGG patients: CNN9 5-fold patient CV, the fold ensemble with and without flip TTA, leave-one-institution-out.

Stages of ``benchmarks/results.py`` (each runnable alone with ``--stages``):

- ``cv36``: ``tumorlab cv`` of ``configs/experiments/lgg_cnn9.yaml`` at a reduced image size and epoch count,
  and the majority-class accuracy of the common test split (the bar for ``acc``);
- ``ensemble36``: ``tumorlab ensemble`` of the cv folder (all fold models), without and with ``--tta flip``, and
  of every fold alone with ``--tta flip``, all on the same test patients; the gain of the ensemble over the mean
  single fold with a percentile interval from resampling the test **patients** (slices of a patient are not
  independent);
- ``loio36``: ``tumorlab cv --group institution`` with the same settings (one fold per institution).

``--collect`` summarises finished fold runs (``tumorlab cv ... --collect``) instead of training them again; the
stage then records the wall time the fold runs took (first fit started to summary written).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np

STAGES36 = ("cv36", "ensemble36", "loio36")
CONFIG = "configs/experiments/lgg_cnn9.yaml"
CV_NAME, LOIO_NAME = "results36_lgg_cnn9", "results36_loio_cnn9"
BOOTSTRAP = 2000


def _cv_cmd(ns, name: str, split: list[str], tiny: list[str]) -> list[str]:
    return ["tumorlab", "cv", "--config", CONFIG, *split, "--data.root", str(ns.lgg_root),
            "--trainer.max_epochs", str(ns.epochs36), "--data.image_size", str(ns.size36), *tiny,
            "--run.root", str(ns.work), "--run.name", name] + (["--collect"] if ns.collect else [])  # fmt: skip


def _newest_summary(work: Path, name: str) -> tuple[Path, dict]:
    folder = max((work / f"{name}-cv").glob("*_cv*"), key=lambda p: p.stat().st_mtime_ns)
    return folder, json.loads((folder / "summary.json").read_text())


def _fold_wall_s(summary_dir: Path, summary: dict) -> float:
    """From the first fold's start (its run.json) to the summary: what training all folds took."""
    first = json.loads((Path(summary["folds"][0]["run"]) / "run.json").read_text())["started"]
    return summary_dir.stat().st_mtime - dt.datetime.fromisoformat(first).timestamp()


def _test_rows(run: Path) -> list[dict]:
    with (run / "predictions.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("split", "test") == "test"]


def _cv_stage(ns, run: Callable, name: str, split: list[str], tiny: list[str]) -> dict:
    cmd = _cv_cmd(ns, name, split, tiny)
    wall = run(cmd, ns.work / "logs" / f"{name}.log")
    folder, summary = _newest_summary(ns.work, name)
    records = [json.loads((Path(f["run"]) / "run.json").read_text()) for f in summary["folds"]]
    return {"command": shlex.join(cmd), "wall_s": wall, "fold_wall_s": _fold_wall_s(folder, summary),
            "summary": summary, "train_time_s": [r.get("train_time_s") for r in records],
            "epochs": [r.get("epochs") for r in records]}  # fmt: skip


def stage_cv36(ns, run: Callable, tiny: list[str]) -> dict:
    """5-fold patient CV of CNN9 and the majority-class accuracy of its (common) test split."""
    out = _cv_stage(ns, run, CV_NAME, ["--folds", str(ns.folds36)], tiny)
    rows = _test_rows(Path(out["summary"]["folds"][0]["run"]))
    counts = {c: sum(r["true_class"] == c for r in rows) for c in sorted({r["true_class"] for r in rows})}
    out["baseline"] = {"slices": len(rows), "patients": len({r["patient"] for r in rows}), "classes": counts,
                       "majority_acc": max(counts.values()) / len(rows)}  # fmt: skip
    return out


def _scores(rows: list[dict]) -> dict:
    from sklearn.metrics import roc_auc_score

    y = np.array([r["true_class"] == "tumour" for r in rows], dtype=int)
    p = np.array([float(r["prob_tumour"]) for r in rows])
    right = np.array([r["true_class"] == r["predicted_class"] for r in rows], dtype=float)
    return {"acc": float(right.mean()), "auroc": float(roc_auc_score(y, p)), "slices": len(rows)}


def _patient_interval(ensemble: list[dict], folds: list[list[dict]], seed: int = 0) -> dict:
    """Ensemble accuracy minus the mean single-fold accuracy, and its 2.5-97.5 % interval over resampled
    test patients (every member scored on the same resampled slices)."""
    files = [r["file"] for r in ensemble]
    for rows in folds:
        if [r["file"] for r in rows] != files:
            raise SystemExit("the fold runs and the ensemble were not scored on the same test slices")
    patients = np.array([r["patient"] for r in ensemble])
    right_e = np.array([r["true_class"] == r["predicted_class"] for r in ensemble], dtype=float)
    right_f = np.array([[r["true_class"] == r["predicted_class"] for r in rows] for rows in folds], dtype=float)
    names = np.unique(patients)
    index = [np.flatnonzero(patients == p) for p in names]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([index[k] for k in rng.integers(0, len(names), len(names))])
        diffs.append(right_e[idx].mean() - right_f[:, idx].mean())
    low, high = np.percentile(diffs, [2.5, 97.5])
    gain = float(right_e.mean() - right_f.mean())
    return {"gain": gain, "low": float(low), "high": float(high), "patients": len(names), "resamples": BOOTSTRAP}


def stage_ensemble36(ns, run: Callable, tiny: list[str]) -> dict:
    """The cv36 fold models as an ensemble (without and with flip TTA) and each alone with flip TTA."""
    cv = ns.work / f"{CV_NAME}-cv"
    _, summary = _newest_summary(ns.work, CV_NAME)
    fold_runs = [Path(f["run"]) for f in summary["folds"]]
    made = {}
    jobs = [("ensemble", [str(cv)], "none"), ("ensemble_flip", [str(cv)], "flip")]
    jobs += [(f"fold{k}_flip", [str(r)], "flip") for k, r in enumerate(fold_runs)]
    commands = []
    for label, members, tta in jobs:
        name = f"results36_{label}"
        cmd = ["tumorlab", "ensemble", *members, "--tta", tta, "--root", str(ns.work), "--name", name, "--no-slices"]
        wall = run(cmd, ns.work / "logs" / f"{name}.log")
        folder = max((ns.work / name).glob("*_ensemble*"), key=lambda p: p.stat().st_mtime_ns)
        made[label] = {"run": str(folder), "wall_s": wall, **_scores(_test_rows(folder))}
        commands.append(shlex.join(cmd))
    singles = [_test_rows(r) for r in fold_runs]
    flipped = [_test_rows(Path(made[f"fold{k}_flip"]["run"])) for k in range(len(fold_runs))]
    return {
        "commands": commands,
        "runs": made,
        "folds": [{"run": str(r), **_scores(rows)} for r, rows in zip(fold_runs, singles, strict=True)],
        "gain": _patient_interval(_test_rows(Path(made["ensemble"]["run"])), singles),
        "gain_flip": _patient_interval(_test_rows(Path(made["ensemble_flip"]["run"])), flipped),
    }


def stage_loio36(ns, run: Callable, tiny: list[str]) -> dict:
    """Leave-one-institution-out CV of CNN9 with the cv36 settings."""
    return _cv_stage(ns, run, LOIO_NAME, ["--group", "institution"], tiny)


# --- Markdown -------------------------------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def render36(results: dict, fmt_summary: Callable[[dict], str]) -> str:
    """The section of docs/results.md for the stages that ran (empty where none did)."""
    cv, ens, loio = (results.get(s) for s in STAGES36)
    if not any((cv, ens, loio)):
        return ""
    lines = ["## LGG, 36 patients: CNN9 patient CV, the fold ensemble, flip TTA, leave-one-institution-out", ""]
    if cv:
        b, folds = cv["baseline"], cv["summary"]["folds"]
        acc = [f["metrics"]["test/acc"] for f in folds]
        auroc = [f["metrics"]["test/auroc"] for f in folds]
        lines += [
            f"`{CONFIG}` on all 36 patients, at the reduced settings of the command below (image size, epochs) so "
            f"that it fits this machine: {len(folds)} folds in {cv['fold_wall_s'] / 60:.0f} min of wall time on 2 "
            "shared cores. The test patients are held out once (the config's split and seed) and are the same for "
            "every fold; the folds rotate the validation patients.",
            "",
            f"Test split: {b['slices']} slices of {b['patients']} patients ("
            + ", ".join(f"{n} {c}" for c, n in b["classes"].items())
            + f"); always answering `no_tumour` scores **{b['majority_acc']:.3f}**.",
            "",
            "| | accuracy | AUROC |",
            "|---|---|---|",
            f"| majority class | {b['majority_acc']:.3f} | 0.5 |",
            f"| single folds, mean ± std over {len(folds)} | {_ms(acc)} | {_ms(auroc)} |",
        ]
        if ens:
            r = ens["runs"]
            flips = [r[f"fold{k}_flip"] for k in range(len(folds))]
            lines += [
                f"| single folds + flip TTA, mean ± std | {_ms([f['acc'] for f in flips])} | "
                f"{_ms([f['auroc'] for f in flips])} |",
                f"| ensemble of the {len(folds)} folds | {r['ensemble']['acc']:.3f} | {r['ensemble']['auroc']:.3f} |",
                f"| ensemble + flip TTA | {r['ensemble_flip']['acc']:.3f} | {r['ensemble_flip']['auroc']:.3f} |",
            ]
        lines += ["", "```", cv["command"], *(ens["commands"] if ens else []), "```", ""]
        if ens:
            g, gf = ens["gain"], ens["gain_flip"]
            lines += [
                f"Ensemble accuracy minus the mean single-fold accuracy: {g['gain']:+.3f} (95 % interval over "
                f"{g['resamples']} resamples of the {g['patients']} test patients: {g['low']:+.3f} … "
                f"{g['high']:+.3f}); "
                f"with flip TTA on both sides: {gf['gain']:+.3f} ({gf['low']:+.3f} … {gf['high']:+.3f}).",
                "",
            ]
        lines += [fmt_summary({k: v for k, v in cv["summary"].items() if k != "out"}), ""]
    if loio:
        lines += ["### Leave one institution out", "", "```", loio["command"], "```", "",
                  f"{len(loio['summary']['folds'])} folds in {loio['fold_wall_s'] / 60:.0f} min of wall time.", "",
                  fmt_summary({k: v for k, v in loio["summary"].items() if k != "out"}), ""]  # fmt: skip
    return "\n".join(lines).rstrip()
