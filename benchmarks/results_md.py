"""Render ``docs/results.md`` from the ``results.json`` that ``benchmarks/results.py`` writes.

Only numbers measured by the commands named beside them appear; a stage that has not run is listed as such.
"""

from __future__ import annotations

import math
import statistics

from tumorlab.evaluation.cv import format_summary

LGG_COLUMNS = ("test/acc", "test/f1", "test/auroc", "test/dice_volume", "test/dice", "test/iou")
MRI4_COLUMNS = ("test/acc", "test/f1", "test/f2", "test/auroc")

HEADER = """# Results on the real MRI data

What these numbers are: **from-scratch training on a 2-core CPU, on small samples** — the LGG patients (all 36 of
`../shared/data` in the section "LGG, 36 patients"; the LGG sections after it were measured on an earlier sample
of 12) and the 2,870-image 4-class `Training/` folder in `../shared/data` — with few epochs, small images and the best
validation epoch kept (`BestCheckpoint` on each config's monitor). They are not the pretrained GPU setting of
the published studies and must not be compared with their numbers; they compare the models and the splits here
with one another, and every one of them is reproduced by the command printed above its table.

Regenerate everything (about {hours:.1f} h on this machine) with

    make results      # = TUMORLAB_REAL_DATA=../shared/data python benchmarks/results.py --docs docs/results.md

or one stage with `--stages cv36|ensemble36|loio36|lgg|baseline|cam|mri4|leaks|pruning` (the others are kept from
`runs/results/results.json`).
Machine: {machine}.
"""


def _ms(stats: dict | None) -> str:
    if not stats:
        return "–"
    mean, std = stats["mean"], stats["std"]
    return "undefined" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "undefined" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _lgg(rows: list[dict]) -> str:
    present = [c for c in LGG_COLUMNS if any(c in r["summary"]["metrics"] for r in rows)]
    folds = len(rows[0]["summary"]["folds"])
    lines = [
        f"## LGG, 12 patients: {folds}-fold patient-grouped cross-validation",
        "",
        "The test patients are drawn once by the data layer (the config's split fractions and seed) and are "
        "the same for every fold; the folds (`StratifiedGroupKFold` over the other patients) "
        "rotate the validation patients. Mean ± sample std (ddof = 1) over the folds; `dice_volume` is the "
        "mean per-patient Dice, `dice`/`iou` are pooled over all test pixels, `acc` is slice-level tumour / "
        "no-tumour accuracy (the segmentation-only U-Net has no classification head).",
        "",
        "| model | " + " | ".join(c.removeprefix("test/") for c in present) + " | train time per fold (s) | "
        "parameters | wall time (s) |",
        "|---|" + "---|" * (len(present) + 3),
    ]
    for r in rows:
        cells = " | ".join(_ms(r["summary"]["metrics"].get(c)) for c in present)
        times = [t for t in r["train_time_s"] if t is not None]
        train = f"{statistics.mean(times):.0f}" if times else "–"
        params = (r.get("parameters") or {}).get("trainable")
        lines.append(f"| {r['name'].removeprefix('results_lgg_')} | {cells} | {train} | {_fmt(params)} | "
                     f"{r['wall_s']:.0f} |")  # fmt: skip
    for r in rows:
        lines += ["", f"### {r['name'].removeprefix('results_lgg_')}", "", "```", r["command"], "```", "",
                  format_summary({k: v for k, v in r["summary"].items() if k != "out"})]  # fmt: skip
    return "\n".join(lines)


def _baseline(b: dict) -> str:
    classes = ", ".join(f"{n} {name}" for name, n in sorted(b["classes"].items()))
    return (
        f"### The LGG test split\n\n{b['slices']} slices of {b['patients']} patients ({classes}); always "
        f"answering its most frequent class gives accuracy **{b['majority_acc']:.3f}**: the bar for the `acc` "
        "column above (AUROC and F1 do not reward that answer)."
    )


def _cam(rows: list[dict]) -> str:
    lines = [
        "## Does the CAM point at the tumour? (LGG, fold 0 of each model, test tumour slices)",
        "",
        "Grad-CAM of the tumour class (pytorch-grad-cam) on each network's `cam_layer`: the pointing game "
        "(the CAM's maximum inside the dilated mask), the IoU of the CAM's top 15 % with the mask, and the "
        "share of CAM energy inside the mask, each averaged over the test slices with tumour. Chance levels "
        "are those of a CAM that points at random (pointing game: the dilated mask's share of the image; "
        "energy share: the mask's share of the image).",
        "",
        "| model | tumour slices | pointing game | its chance | IoU of the top 15 % | energy share | "
        "mask share (energy share of a flat CAM) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loc = r["localisation"]
        cells = " | ".join(_fmt(loc.get(k)) for k in ("slices", "pointing_game", "pointing_chance", "iou_top",
                                                       "energy_share", "mask_share"))  # fmt: skip
        lines.append(f"| {r['name'].removeprefix('results_lgg_')} | {cells} |")
    lines += ["", "```", *(r["command"] for r in rows), "```"]
    return "\n".join(lines)


def _mri4(stage: dict) -> str:
    runs = stage["runs"]
    lines = [
        "## 4-class MRI (`Training/`, 2,870 images): a split grouped by duplicates vs a random split",
        "",
        "`grouped`: tumorlab's default, a stratified 70/15/15 split in which exact and near-duplicate images "
        "(perceptual hash) never straddle splits. `random`: the same fractions with `--data.duplicates none`, "
        "which ignores duplicates, as many published splits do. The difference is the inflation that leaked "
        "copies give a test accuracy.",
        "",
        "| model | split | " + " | ".join(c.removeprefix("test/") for c in MRI4_COLUMNS) +
        " | epochs | train time (s) | trainable parameters |",
        "|---|---|" + "---|" * (len(MRI4_COLUMNS) + 3),
    ]  # fmt: skip
    for r in runs:
        rec = r["record"]
        metrics = rec.get("test_metrics") or {}
        cells = " | ".join(_fmt(metrics.get(c.removeprefix("test/"))) for c in MRI4_COLUMNS)
        params = (rec.get("parameters") or {}).get("trainable")
        lines.append(f"| {r['model']} | {r['split']} | {cells} | {_fmt(rec.get('epochs'))} | "
                     f"{_fmt(rec.get('train_time_s'))} | {_fmt(params)} |")  # fmt: skip
    gaps = []
    for model in dict.fromkeys(r["model"] for r in runs):
        acc = {r["split"]: (r["record"].get("test_metrics") or {}).get("acc") for r in runs if r["model"] == model}
        if acc.get("grouped") is not None and acc.get("random") is not None:
            gaps.append(f"{model} {100 * (acc['random'] - acc['grouped']):+.1f}")
    if gaps:
        lines += ["", "Test accuracy of the random split minus the grouped split, in points: " + ", ".join(gaps) + "."]
    lines += ["", "Commands:", "", "```", *(r["command"] for r in runs), stage["compare_command"], "```", "",
              "Per-class tables and confusion matrices: each run's `report.md`. `tumorlab compare` over the eight "
              "runs (its `data_check` column flags the two splits):", "", stage["comparison_md"]]  # fmt: skip
    return "\n".join(lines)


def _leaks(rows: list[dict]) -> str:
    lines = [
        "## How much does a leaky split leak? (the same eight 4-class runs)",
        "",
        "For every test image: does the run's own training split hold a copy of it — an identical perceptual "
        "hash, or one within the data layer's near-duplicate threshold (bits of 256) — and how accurate is the "
        "model on those test images and on the others? The training split is rebuilt from each run's "
        "`config.yaml`, the hashes by `tumorlab.evaluation.nearcopies`, the answers from its `predictions.csv`.",
        "",
        "| model | split | test images | with an identical copy in training | within the threshold | "
        "accuracy on those | accuracy on the others |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        near = r["near"]
        lines.append(
            f"| {r['model']} | {r['split']} | {r['test_images']} | {r['identical']['copies']} | "
            f"{near['copies']} (≤ {r['threshold_bits']} bits) | {_fmt(near['acc_copies'])} | "
            f"{_fmt(near['acc_others'])} |"
        )
    leaky = [r for r in rows if r["near"]["copies"]]
    if leaky:
        share = max(r["near"]["copies"] / r["test_images"] for r in leaky)
        lines += ["", f"At most {100 * share:.1f} % of a random split's test images have a training copy here, so "
                  f"the copies alone can move its overall test accuracy by at most {100 * share:.1f} points (all "
                  "of them right instead of wrong); a larger gap between the two splits above comes from which "
                  "images each split tests and from training noise, not from the leak. The duplicate-grouped "
                  "split has no test image with a training copy."]  # fmt: skip
    return "\n".join(lines + ["", "`python benchmarks/results.py --stages leaks` (after the mri4 stage)."])


def _pruning(stage: dict) -> str:
    return "\n".join(["## Pruning CNN9 (LGG study's table)", "", "```", stage["command"], "```", "",
                      stage["report_md"]])  # fmt: skip


def render(results: dict) -> str:
    hours = sum(results.get("stage_wall_s", {}).values()) / 3600
    m = results.get("machine", {})
    machine = f"{m.get('cores')} CPU cores, Python {m.get('python')}, torch {m.get('torch')}"
    parts = [HEADER.format(hours=hours, machine=machine)]
    if results.get("quick"):
        parts.append("**--quick run: pipeline check only, the numbers mean nothing.**")
    from results_lgg36 import render36  # the sibling module (benchmarks/ is on sys.path)

    lgg36 = render36(results, format_summary)
    if lgg36:
        parts.append(lgg36)
    sections = (("lgg", _lgg), ("baseline", _baseline), ("cam", _cam), ("mri4", _mri4), ("leaks", _leaks))
    for stage, fn in (*sections, ("pruning", _pruning)):
        wall = results.get("stage_wall_s", {}).get(stage)
        if stage in results:
            commit = (results.get("commits") or {}).get(stage)
            at = f" (tumorlab at commit {commit})" if commit else ""
            parts.append(fn(results[stage]) + f"\n\nStage wall time: {wall:.0f} s{at}.")
        else:
            parts.append(f"## {stage}\n\nNot run yet: `python benchmarks/results.py --stages {stage} --docs ...`.")
    text = "\n\n".join(parts) + "\n"
    for real, shown in (results.get("paths") or {}).items():  # this machine's folders as the docs name them
        text = text.replace(real, shown)
    return text
