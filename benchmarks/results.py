"""Every study's numbers on the real MRI data, through the ``tumorlab`` commands, into ``docs/results.md``.

Stages (each a list of ``tumorlab`` commands, run one after another in child processes, each timed):

- ``lgg``: patient-grouped cross-validation (``tumorlab cv``) of CNN9 and ResNet3 (tumour / no tumour, 128 px)
  and of the U-Net three ways (multi-task θ = 0.5, uncertainty weighting, segmentation only; 64 px) on the
  LGG slices. The test patients are held out once; the folds rotate validation over the other patients;
- ``cam``: ``tumorlab cam --score`` (pointing game, IoU of the top 15 %, energy share) of fold 0 of CNN9,
  ResNet3 and the multi-task U-Net's classification head, on the test tumour slices;
- ``mri4``: SmallCNN, CNN9, ResNet3 and timm resnet18 (from scratch) on the 4-class ``Training/`` folder,
  once with the stratified split grouped by duplicates (tumorlab's default) and once with a random split that
  ignores duplicates (``--data.duplicates none``), then ``tumorlab compare`` over the eight runs;
- ``leaks``: for each 4-class run, the test images that have a copy in its own training split, and the
  accuracy on them and on the others (the mechanism behind a leaky split's numbers);
- ``pruning``: ``benchmarks/pruning.py`` (the LGG study's pruning table for CNN9) on the ``lgg`` stage's CNN9
  fold models.

Every stage writes what it measured into ``<work>/results.json``; ``--docs FILE`` renders the Markdown from it,
so a stage can be rerun alone (``--stages mri4``) and the document rebuilt.

    TUMORLAB_REAL_DATA=../shared/data python benchmarks/results.py --docs docs/results.md     # make results
    python benchmarks/results.py --quick --lgg-root PHANTOM --mri4-root PHANTOM --work DIR --docs FILE

``--quick`` (the test that keeps this script working) runs one model per stage for 2 batches at 32 px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("lgg", "baseline", "cam", "mri4", "leaks", "pruning")
STAGES36 = ("cv36", "ensemble36", "loio36")  # benchmarks/results_lgg36.py: the 36 LGG patients

# (name, configs, extra arguments); fold runs go to <work>/<name>-cv/fold<k>/.
LGG = (
    ("results_lgg_cnn9", ["configs/experiments/lgg_cnn9.yaml"], []),
    ("results_lgg_resnet3", ["configs/experiments/lgg_resnet3.yaml"], []),
    ("results_lgg_unet_multitask", ["configs/experiments/lgg_unet_multitask.yaml"], ["unet"]),
    ("results_lgg_unet_uncertainty", ["configs/experiments/lgg_unet_uncertainty.yaml"], ["unet"]),
    ("results_lgg_unet_segmentation", ["configs/experiments/lgg_unet_segmentation.yaml"], ["unet"]),
)
CAM = ("results_lgg_cnn9", "results_lgg_resnet3", "results_lgg_unet_multitask")
MRI4_MODELS = (
    ("smallcnn", ["configs/experiments/mri4_smallcnn.yaml"], []),
    ("cnn9", ["configs/data/mri4.yaml", "configs/model/cnn9.yaml"], ["--seed_everything", "42"]),
    ("resnet3", ["configs/data/mri4.yaml", "configs/model/resnet3.yaml"], ["--seed_everything", "42"]),
    ("resnet18", ["configs/experiments/mri4_resnet18_nadam.yaml"], ["--model.net.init_args.pretrained", "false"]),
)
MRI4_SPLITS = (("grouped", []), ("random", ["--data.duplicates", "none"]))


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    real = Path(os.environ.get("TUMORLAB_REAL_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--lgg-root", type=Path, default=real / "lgg-mri-segmentation")
    parser.add_argument("--mri4-root", type=Path, default=real / "brain-tumor-classification")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "results", help="run root (default runs/results)")
    parser.add_argument("--stages", nargs="+", choices=(*STAGES, *STAGES36), help="default: all of them")
    parser.add_argument("--folds36", type=int, default=5, help="cv36: patient folds (default 5)")
    parser.add_argument("--epochs36", type=int, default=15, help="cv36, loio36: epochs per fold (default 15)")
    parser.add_argument("--size36", type=int, default=64, help="cv36, loio36: image size (default 64)")
    parser.add_argument(
        "--collect", action="store_true", help="cv36, loio36: summarise the finished fold runs instead of training"
    )
    parser.add_argument("--folds", type=int, default=4, help="LGG cross-validation folds (default 4)")
    parser.add_argument("--lgg-epochs", type=int, default=8, help="epochs per LGG fold (default 8)")
    parser.add_argument("--unet-size", type=int, default=64, help="U-Net image size (default 64)")
    parser.add_argument("--mri4-epochs", type=int, default=5, help="epochs per 4-class run (default 5)")
    parser.add_argument("--mri4-size", type=int, default=64, help="4-class image size (default 64)")
    parser.add_argument(
        "--pruning-epochs", type=int, default=20, help="dense CNN9 epochs of the pruning study (default 20)"
    )
    parser.add_argument(
        "--pruning-run", type=Path,
        help="prune this dense lgg_cnn9 fit run (default: the lgg stage's CNN9 fold models, else one trained here)",
    )  # fmt: skip
    parser.add_argument("--docs", type=Path, help="write the Markdown report here (from <work>/results.json)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline, not the numbers")
    ns = parser.parse_args(argv)
    if ns.stages is None:  # --quick leaves out the 36-patient stages unless they are named (they need sites)
        ns.stages = list(STAGES) + ([] if ns.quick else list(STAGES36))
    if ns.quick:  # one model per stage, 2 folds, a few batches of 32 px; pruning.py has a --quick of its own
        ns.stages = [s for s in ns.stages if s != "pruning"]
        ns.folds36, ns.epochs36, ns.size36 = 2, 1, 32
        ns.folds, ns.lgg_epochs, ns.mri4_epochs, ns.pruning_epochs, ns.unet_size, ns.mri4_size = 2, 1, 1, 1, 32, 32
    return ns


def _tiny(ns: argparse.Namespace) -> list[str]:
    """--quick: a few batches of 32 px images (the data's own image_size otherwise)."""
    return ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--data.image_size", "32",
            "--data.batch_size", "4"] if ns.quick else []  # fmt: skip


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` (a ``tumorlab`` command or a script), its output into ``log``; the wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = shlex.join(cmd)
    print(f"$ {shown}\n  (log: {log})", flush=True)
    argv = [sys.executable, "-m", "tumorlab", *cmd[1:]] if cmd[0] == "tumorlab" else [sys.executable, *cmd[1:]]
    env = os.environ | {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        sys.exit(f"{shown} failed with exit status {code} after {wall:.0f} s:\n{tail}")
    print(f"  done in {wall:.0f} s", flush=True)
    return wall


def _newest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime_ns)


def _fold_runs(summary: dict) -> list[dict]:
    """train_time_s, epochs and parameters of every fold run of a cv summary."""
    return [json.loads((Path(f["run"]) / "run.json").read_text()) for f in summary["folds"]]


def stage_lgg(ns: argparse.Namespace) -> list[dict]:
    out = []
    for name, configs, extra in LGG[:1] if ns.quick else LGG:
        size = ["--data.image_size", str(ns.unet_size)] if "unet" in extra else []
        cmd = ["tumorlab", "cv", *(a for c in configs for a in ("--config", c)), "--folds", str(ns.folds),
               "--data.root", str(ns.lgg_root), "--trainer.max_epochs", str(ns.lgg_epochs), *size, *_tiny(ns),
               "--run.root", str(ns.work), "--run.name", name]  # fmt: skip
        wall = _run(cmd, ns.work / "logs" / f"{name}.log")
        summary = json.loads((_newest(ns.work / f"{name}-cv", "*_cv") / "summary.json").read_text())
        runs = _fold_runs(summary)
        out.append({"name": name, "command": shlex.join(cmd), "wall_s": wall, "summary": summary,
                    "train_time_s": [r.get("train_time_s") for r in runs], "epochs": [r.get("epochs") for r in runs],
                    "parameters": runs[0].get("parameters")})  # fmt: skip
    return out


def stage_baseline(ns: argparse.Namespace) -> dict:
    """The LGG test split (the same for every fold) as fold 0 of the first model saw it: slices, patients,
    tumour slices, and the accuracy of always answering its most frequent class."""
    import csv
    from collections import Counter

    run = _newest(ns.work / f"{LGG[0][0]}-cv" / "fold0", "*_fit*")
    with (run / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("split", "test") == "test"]
    counts = Counter(r["true_class"] for r in rows)
    return {"run": str(run), "slices": len(rows), "patients": len({r["patient"] for r in rows}),
            "classes": dict(counts), "majority_acc": max(counts.values()) / len(rows)}  # fmt: skip


def stage_cam(ns: argparse.Namespace) -> list[dict]:
    out = []
    for name in CAM[:1] if ns.quick else CAM:
        run = _newest(ns.work / f"{name}-cv" / "fold0", "*_fit*")
        dest = ns.work / "cam" / name
        cmd = ["tumorlab", "cam", "--ckpt_path", str(run), "--score", "--out", str(dest), "--device", "cpu"]
        wall = _run(cmd, ns.work / "logs" / f"cam_{name}.log")
        out.append({"name": name, "command": shlex.join(cmd), "wall_s": wall, "run": str(run),
                    "localisation": json.loads((dest / "localisation.json").read_text())})  # fmt: skip
    return out


def stage_mri4(ns: argparse.Namespace) -> dict:
    runs = []
    for model, configs, extra in MRI4_MODELS[:1] if ns.quick else MRI4_MODELS:
        for split, split_args in MRI4_SPLITS:
            name = f"results_mri4_{model}_{split}"
            cmd = ["tumorlab", "fit", *(a for c in configs for a in ("--config", c)), *extra, *split_args,
                   "--data.root", str(ns.mri4_root), "--data.image_size", str(ns.mri4_size), "--data.cache", "disk",
                   "--data.cache_dir", str(ns.work / "cache"),
                   "--trainer.max_epochs", str(ns.mri4_epochs), "--model.monitor", "val/f1", *_tiny(ns),
                   "--run.root", str(ns.work), "--run.name", name, "--run.test_after_fit", "true"]  # fmt: skip
            wall = _run(cmd, ns.work / "logs" / f"{name}.log")
            run = _newest(ns.work / name, "*_fit*")
            runs.append({"name": name, "model": model, "split": split, "command": shlex.join(cmd), "wall_s": wall,
                         "run": str(run), "record": json.loads((run / "run.json").read_text())})  # fmt: skip
    dest = ns.work / "compare_mri4"
    cmd = ["tumorlab", "compare", *(r["run"] for r in runs), "--sort", "", "--out", str(dest)]
    _run(cmd, ns.work / "logs" / "compare_mri4.log")
    pattern = shlex.quote(str(ns.work / "results_mri4_*/*_fit*"))
    compare = f"tumorlab compare {pattern} --sort '' --out {shlex.quote(str(dest))}"
    return {"runs": runs, "compare_command": compare, "comparison_md": (dest / "comparison.md").read_text()}


def leak_check(run: Path) -> dict:
    """How many test images of a fit run have a near-copy in its own training split (perceptual hash within
    the data layer's near-duplicate threshold), and the test accuracy on those and on the others.

    The training split is rebuilt from the run's own config (``load_run``), the hashes come from the data
    layer (``nearcopies``), the predictions from the run's ``predictions.csv``.
    """
    import csv
    import tempfile

    from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD
    from tumorlab.evaluation.nearcopies import hashes_of_files, near_copies, read_train_hashes, write_train_hashes
    from tumorlab.runs.load import load_run

    dm = load_run(run, weights=False).datamodule
    dm.setup("fit")
    with tempfile.TemporaryDirectory() as tmp:
        write_train_hashes(dm, tmp)
        train = read_train_hashes(tmp)
    with (run / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("split", "test") == "test"]
    hashes, errors = hashes_of_files([r["file"] for r in rows])
    if any(errors):
        raise SystemExit(f"{run}: cannot hash test image {next(e for e in errors if e)}")
    threshold = int(getattr(dm, "near_threshold", DEFAULT_NEAR_THRESHOLD))
    out = {"run": str(run), "test_images": len(rows), "threshold_bits": threshold}
    for label, bits in (("identical", 0), ("near", threshold)):
        copied = [c is not None for c in near_copies(hashes, train, bits)]
        right = [r["true_class"] == r["predicted_class"] for r in rows]
        hit = [ok for ok, c in zip(right, copied, strict=True) if c]
        rest = [ok for ok, c in zip(right, copied, strict=True) if not c]
        out[label] = {"copies": len(hit), "acc_copies": sum(hit) / len(hit) if hit else None,
                      "acc_others": sum(rest) / len(rest) if rest else None}  # fmt: skip
    return out


def stage_leaks(ns: argparse.Namespace) -> list[dict]:
    """``leak_check`` of every 4-class run of the mri4 stage (read from results.json)."""
    store = json.loads((ns.work / "results.json").read_text())
    if "mri4" not in store:
        sys.exit("the leaks stage needs the mri4 stage's runs: run --stages mri4 first")
    out = []
    for r in store["mri4"]["runs"]:
        print(f"leak check: {r['run']}", flush=True)
        out.append({"name": r["name"], "model": r["model"], "split": r["split"], **leak_check(Path(r["run"]))})
    return out


def _dense_cnn9_runs(ns: argparse.Namespace) -> list[Path]:
    """The dense models to prune: ``--pruning-run``, else the lgg stage's CNN9 fold models (the newest fit of each
    fold), else none (pruning.py then trains one)."""
    if ns.pruning_run:
        return [ns.pruning_run]
    cv = ns.work / f"{LGG[0][0]}-cv"
    folds = sorted(f for f in cv.glob("fold*") if any(f.glob("*_fit*"))) if cv.is_dir() else []
    return [_newest(f, "*_fit*") for f in folds]


def stage_pruning(ns: argparse.Namespace) -> dict:
    """benchmarks/pruning.py on the CV fold models of CNN9 (best checkpoints by val/auroc): the accuracy target
    is decided on their mean, since one model's 68 test slices cannot resolve one point."""
    report = ns.work / "pruning.md"
    cmd = ["python", "benchmarks/pruning.py", "--root", str(ns.lgg_root), "--epochs", str(ns.pruning_epochs),
           "--finetune-epochs", "1" if ns.quick else "10", "--runs", "20", "--work", str(ns.work / "pruning"),
           "--out", str(report)]  # fmt: skip
    cmd += ["--quick"] if ns.quick else []
    runs = _dense_cnn9_runs(ns)
    cmd += ["--run", *map(str, runs), "--checkpoint", "best"] if runs else []
    wall = _run(cmd, ns.work / "logs" / "pruning.log")
    return {"command": shlex.join(cmd), "wall_s": wall, "report_md": report.read_text()}


def _commit() -> str | None:
    """The git commit of the code that ran (the runs' own run.json files record it too)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ns = _args(argv)
    ns.work = ns.work.resolve()
    ns.work.mkdir(parents=True, exist_ok=True)
    store = ns.work / "results.json"
    for stage in ns.stages:
        start = time.perf_counter()
        if stage in STAGES36:
            import results_lgg36  # the sibling module (benchmarks/ is on sys.path)

            measured = getattr(results_lgg36, f"stage_{stage}")(ns, _run, _tiny(ns))
        else:
            measured = globals()[f"stage_{stage}"](ns)
        # read again before writing: another invocation may have written other stages meanwhile
        results = json.loads(store.read_text()) if store.is_file() else {}
        results[stage] = measured
        results.setdefault("stage_wall_s", {})[stage] = time.perf_counter() - start
        results.setdefault("commits", {})[stage] = _commit()
        results["machine"], results["quick"] = machine(), ns.quick
        results["paths"] = {str(ns.work): "runs/results", str(ns.lgg_root.resolve().parent): "$TUMORLAB_REAL_DATA"}
        store.write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads(store.read_text()) if store.is_file() else {}
    if ns.docs:
        from results_md import render  # the sibling module (benchmarks/ is on sys.path)

        ns.docs.write_text(render(results))
        print(f"wrote {ns.docs}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
