"""``report.md`` of a run: what was trained on what, how long, the recomputed metrics and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tumorlab.errors import DataError
from tumorlab.runs.load import RunFolder, read_run

__all__ = ["data_facts", "near_copy_lines", "number", "report_markdown"]

_DATA_KEYS = ("root", "test_root", "csv", "task", "image_size", "channels", "classes", "split", "num_folds", "fold",
              "test_group_by", "test_group", "seed")  # fmt: skip


def number(value: Any, digits: int = 4) -> str:
    """A table cell: 4 decimals for floats, ``n/a`` for a missing or undefined value."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def data_facts(config: dict[str, Any]) -> dict[str, Any]:
    """The data module's class and the keys that decide which images land in which split."""
    data = config.get("data") or {}
    init = data.get("init_args") or {}
    facts = {"data module": data.get("class_path")}
    facts.update({k: init[k] for k in _DATA_KEYS if k in init and init[k] is not None})
    if not init.get("num_folds"):
        facts.pop("fold", None)  # a hold-out split: the fold key has no meaning
    facts["seed_everything"] = config.get("seed_everything")
    return facts


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(number(c) for c in row) + " |" for row in rows]
    return lines


def _model_lines(config: dict[str, Any]) -> list[str]:
    model = config.get("model") or {}
    init = model.get("init_args") or {}
    net = init.get("net") or {}
    optimizer = init.get("optimizer") or {}
    lr = (optimizer.get("init_args") or {}).get("lr") if isinstance(optimizer, dict) else None
    return [
        f"- task: `{model.get('class_path')}`, monitored metric `{init.get('monitor')}`",
        f"- network: `{net.get('class_path')}` with `{net.get('init_args') or {}}`",
        f"- optimiser: `{optimizer.get('class_path') if isinstance(optimizer, dict) else optimizer}`, lr {lr}",
    ]


def _training_lines(run: RunFolder) -> list[str]:
    fit = run.fit_record
    params = run.record.get("parameters") or fit.get("parameters") or {}
    seconds = fit.get("train_time_s")

    def count(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) else number(value)

    return [
        f"- parameters: {count(params.get('trainable'))} trainable of {count(params.get('total'))}",
        f"- training: {number(fit.get('epochs'))} epochs in {number(seconds, 1)} s (fit run `{run.fit_dir}`)",
        f"- best checkpoint: `{fit.get('best_checkpoint')}` {fit.get('best_score') or ''}",
        f"- evaluated checkpoint: `{run.checkpoint()}`",
    ]


def _ensemble_lines(run: RunFolder) -> list[str]:
    """Which runs an ensemble combined (their models and checkpoints) and the test-time augmentations."""
    record = run.record
    tta = record.get("tta") or []
    lines = [
        f"Probabilities averaged over {len(record['members'])} runs (segmentation: per pixel)"
        + (
            f" and over the image and its {', '.join(tta)} copy (flipped back)"
            if tta
            else ", no test-time augmentation"
        )
        + f"; split `{record.get('split')}`.",
        "",
        "| member | network | checkpoint |",
        "|---|---|---|",
    ]
    for member in record["members"]:
        net = "?"
        try:
            config = read_run(member["run"]).config
            net = str(((config.get("model") or {}).get("init_args") or {}).get("net", {}).get("class_path"))
        except (DataError, OSError):  # a member that moved since: its recorded paths still say which it was
            pass
        lines.append(f"| `{member['run']}` | `{net}` | `{Path(member['checkpoint']).name}` |")
    return lines


def _metric_tables(metrics: dict[str, Any]) -> list[str]:
    overall = metrics["overall"]
    keys = [
        k
        for k in ("accuracy", "precision", "recall", "f1", "f2", "auroc", "mean_slice_dice", "mean_slice_dice_tumour")
        if k in overall
    ]
    lines = [f"Overall ({metrics['samples']} samples; precision to AUROC: {metrics['average']}):", ""]
    lines += _table(keys, [[overall[k] for k in keys]])
    per_class = metrics["per_class"]
    columns = ["support", "predicted", "precision", "recall", "f1", "f2", "auroc"]
    lines += ["", "Per class (one vs rest):", ""]
    lines += _table(["class", *columns], [[name, *(v[c] for c in columns)] for name, v in per_class.items()])
    names = metrics["confusion_matrix"]["class_names"]
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):", ""]
    lines += _table(
        ["true \\ predicted", *names],
        [[n, *row] for n, row in zip(names, metrics["confusion_matrix"]["matrix"], strict=True)],
    )
    if metrics.get("per_patient"):
        patients = metrics["per_patient"]["patients"]
        columns = ["slices", "tumour_slices", "accuracy", "dice", "mean_slice_dice", "mean_slice_dice_tumour"]
        lines += ["", f"Per patient ({metrics['per_patient']['dice']}):", ""]
        lines += _table(["patient", *columns], [[p, *(v[c] for c in columns)] for p, v in patients.items()])
    if metrics.get("notes"):
        lines += ["", "Notes:", ""] + [f"- `{key}`: {note}" for key, note in metrics["notes"].items()]
    if metrics["undefined"]:
        lines += ["", "Undefined on this data (n/a above):", ""]
        lines += [f"- `{key}`: {reason}" for key, reason in metrics["undefined"].items()]
    return lines


def _source(facts: dict[str, Any] | None) -> str:
    facts = dict(facts or {})
    module = str(facts.pop("data_module", None) or "?").rsplit(".", 1)[-1]
    return f"`{module}` " + ", ".join(f"{k} `{v}`" for k, v in facts.items())


def _cross_data_lines(record: dict[str, Any]) -> list[str]:
    """Which data trained and which tested the model, and the class mapping (an evaluation of a fit run)."""
    if "trained_on" not in record:
        return []
    lines = [
        f"- trained on: {_source(record.get('trained_on'))}",
        f"- tested on: {_source(record.get('tested_on'))}"
        + (" (other data than in training)" if record.get("other_data") else ""),
    ]
    mapping = record.get("class_mapping") or {}
    if mapping.get("line"):
        lines.append(f"- {mapping['line']}")
    if mapping.get("binary_from_model_outputs"):
        lines.append(
            f"- scored as tumour / no tumour: the model keeps its {len(mapping['model_classes'])} trained outputs; "
            "p(no_tumour) is the no_tumour probability and p(tumour) the sum of the tumour classes' probabilities"
        )
    return lines


def near_copy_lines(metrics: dict[str, Any]) -> list[str]:
    """The near-copy section: the count, the rule, and the overall metrics on all and on the other images."""
    copies = metrics.get("near_copies")
    if not copies:
        return []
    keys = ["samples", "accuracy", "precision", "recall", "f1", "f2", "auroc"]
    clean = metrics.get("without_near_copies")
    lines = [
        "## Near-copies of the training images",
        "",
        f"{copies['count']} of {copies['test_images']} test images are near-copies of the fit's "
        f"{copies['train_images']} training images ({copies['rule']}; hashes from `{copies['train_hashes']}`); "
        "`predictions.csv` marks them in `near_copy_of_train` and names the training file in `train_copy`.",
        "",
    ]
    rows = [["all test images", *(metrics["overall"].get(k) for k in keys)]]
    rows.append(
        ["without near-copies", *((clean or {}).get("overall", {}).get(k) for k in keys)]
        if clean
        else ["without near-copies", *([None] * len(keys))]
    )
    return lines + _table(["test images", *keys], rows) + [""]


def report_markdown(run: RunFolder, metrics: dict[str, Any], figures: dict[str, Path]) -> str:
    """The whole ``report.md`` text; ``figures`` maps figure names to paths relative to the run folder."""
    source = metrics["source"]
    lines = [f"# Report: {run.path.parent.name} / {run.path.name}", ""]
    lines += [
        f"Run folder `{run.path}` ({run.command}). Every number below is recomputed, as the test logged it, from "
        f"`predictions.csv` ({source['rows']} rows, split {', '.join(source['splits'])}).",
        "",
    ]
    if source.get("made_by_predict_run"):
        lines += [
            f"`predictions.csv` was made for this report by `tumorlab predict` in `{source['made_by_predict_run']}`.",
            "",
        ]
    elif run.command != "predict" and run.record.get("predictions"):  # written by the test pass (TestPredictions)
        lines += ["`predictions.csv` holds the rows of the test pass itself (those of its metrics in run.json).", ""]
    facts = data_facts(run.config)
    if run.command == "ensemble":  # the first member's config: its fold is not the ensemble's
        facts = {k: v for k, v in facts.items() if k not in ("num_folds", "fold")}
    lines += ["## Data", ""] + [f"- {k}: `{v}`" for k, v in facts.items()]
    lines += _cross_data_lines(run.record) + [""]
    if run.command == "ensemble":
        lines += ["## Ensemble", ""] + _ensemble_lines(run) + [""]
    else:
        lines += ["## Model", ""] + _model_lines(run.config) + [""]
        lines += ["## Training", ""] + _training_lines(run) + [""]
    lines += ["## Metrics", ""] + _metric_tables(metrics) + [""]
    lines += near_copy_lines(metrics)
    lines += ["## Figures", ""]
    for name, path in figures.items():
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({path.as_posix()})", ""]
    for item in metrics.get("slice_panel") or []:
        lines.append(
            f"- {item['label']}: `{item['file']}` Dice {item['dice_recomputed']:.4f} "
            f"(predictions.csv: {item['dice_csv']:.4f})"
        )
    return "\n".join(lines).rstrip() + "\n"
