"""Test a trained model on another data set: which classes of the model score which classes of the data.

``tumorlab test --ckpt_path RUN --data.root OTHER`` builds the data module of ``OTHER`` with the classes of the
model (``model_classes_of(RUN)``: the class names the fit recorded in ``run.json``). Both namings of the 4-class
sets read as the same classes (``glioma_tumor`` and ``glioma`` are ``glioma``, see ``tumorlab.data.folders``);
a class of the data that the model never saw stops the command before anything is computed, naming both
class lists. ``--data.binary true`` on a model trained on more classes scores it as tumour / no tumour: the
model keeps its trained head (its checkpoint loads) and its outputs become two, ``p(no_tumour)`` and the sum of
the probabilities of its tumour classes (``collapse_to_binary``). The mapping is printed as one line
(``class mapping (model <- data): glioma <- glioma_tumor/, ...``) and kept in ``run.json`` with the data sets
that trained and that tested the model (``trained_on``, ``tested_on``), which ``report.md`` shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DATA_KEYS",
    "adapt_task",
    "class_mapping",
    "collapse_to_binary",
    "data_source",
    "evaluation_record",
    "model_classes_of",
    "set_model_classes",
]

# The keys of a data config that say which images it reads and how it splits them.
DATA_KEYS = ("root", "test_root", "csv", "split", "seed", "classes", "binary", "num_folds", "fold")


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}


def model_classes_of(run_dir: str | Path) -> list[str] | None:
    """The class names of a fit run's model, in the order of its outputs, or ``None`` where unknown.

    ``run.json``'s ``class_names`` (written when the fit ends), else the training root's class folders read
    as the fit read them (``data.classes``, else every class folder, sorted; two with ``binary``), where
    that root still exists; else ``None``.
    """
    from tumorlab.data.folders import canonical_class, resolve_roots, scan_class_folders
    from tumorlab.errors import DataError

    run_dir = Path(run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    if record.get("class_names"):
        return [str(c) for c in record["class_names"]]
    init = (_config(run_dir).get("data") or {}).get("init_args") or {}
    if init.get("binary"):
        return ["no_tumour", "tumour"]
    if init.get("classes"):
        return [canonical_class(c) or str(c) for c in init["classes"]]
    if not init.get("root"):
        return None
    try:
        return sorted(scan_class_folders(resolve_roots(init["root"])[0], None, []))
    except (DataError, OSError):
        return None


def set_model_classes(cfg: Any, run_dir: Path) -> list[str] | None:
    """Give the data config of an evaluation of ``run_dir`` the model's classes (``data.model_classes``).

    Only data modules that take ``model_classes`` (``FolderDataModule``) get them; returns them, or ``None``.
    """
    init = cfg.get("data.init_args") if cfg.get("data") is not None else None
    if init is None or "model_classes" not in init or init.get("model_classes") is not None:
        return None if init is None else init.get("model_classes")
    classes = model_classes_of(run_dir)
    if classes is not None:
        init.model_classes = list(classes)
    return classes


def class_mapping(datamodule: Any) -> dict[str, Any] | None:
    """The class mapping of a data module built with ``model_classes``: which data classes (and folders)
    each model output scores, as ``{model_classes, data_classes, binary, scored_as, line}``; ``None`` without."""
    model = getattr(datamodule, "model_classes", None)
    if model is None:
        return None
    folders = getattr(datamodule, "class_folders", {}) or {}
    data = list(folders)

    def read(classes: list[str]) -> str:
        return ", ".join(f"{f}/" for c in classes for f in folders.get(c, [])) or "(none)"

    collapsed = bool(datamodule.binary) and model != ["no_tumour", "tumour"]
    if collapsed:
        tumour = [c for c in model if c != "no_tumour"]
        line = (
            f"class mapping (model <- data): the model's {len(model)} outputs are scored as 2 classes: "
            f"no_tumour = p(no_tumour) <- {read(['no_tumour'])}; tumour = "
            f"{' + '.join(f'p({c})' for c in tumour)} <- {read([c for c in data if c != 'no_tumour'])}"
        )
    elif datamodule.binary:
        line = (
            f"class mapping (model <- data): no_tumour <- {read(['no_tumour'])}; "
            f"tumour <- {read([c for c in data if c != 'no_tumour'])}"
        )
    else:
        parts = [f"{c} <- {read([c]) if c in folders else '(no images)'}" for c in model]
        line = "class mapping (model <- data): " + "; ".join(parts)
    return {
        "model_classes": list(model),
        "data_classes": data,
        "scored_as": list(datamodule.class_names),
        "binary_from_model_outputs": collapsed,
        "folders": folders,
        "line": line,
    }


def collapse_to_binary(task: Any, model_classes: list[str]) -> None:
    """Score a task's multi-class network as ``[no_tumour, tumour]`` in place.

    A forward hook turns the network's class logits into the log-probabilities of ``no_tumour`` and of the
    sum of the other classes, so softmax of the new outputs is ``[p(no_tumour), 1 - p(no_tumour)]`` and the
    task's loss, metrics and predictions are those of two classes. The weights and their names stay as
    trained (the checkpoint loads as it is); the task's class metrics are rebuilt for two classes, and class
    weights of the training classes, which have no meaning for two, are dropped (the loss is unweighted).
    """
    import torch

    no = model_classes.index("no_tumour")
    others = [i for i in range(len(model_classes)) if i != no]

    def hook(module, args, output):
        logits = getattr(output, "class_logits", output)
        total = logits.logsumexp(dim=1, keepdim=True)
        tumour = logits[:, others].logsumexp(dim=1, keepdim=True)
        two = torch.cat([logits[:, no : no + 1], tumour], dim=1) - total
        return output._replace(class_logits=two) if hasattr(output, "class_logits") else two

    task.net.register_forward_hook(hook)
    task.net.num_classes = 2  # TumorTask.num_classes reads it: the check against the data and the metrics
    if hasattr(task, "_add_class_metrics"):
        task._add_class_metrics(2)
    if getattr(task, "class_weight", None) is not None or getattr(task, "_class_weights_spec", None):
        task._class_weights_spec = None
        task.class_weight = None


def adapt_task(task: Any, datamodule: Any) -> dict[str, Any] | None:
    """Fit a freshly built task to data built with ``model_classes``: print the class mapping and, where the
    data scores tumour / no tumour and the model has more classes, ``collapse_to_binary``. Returns the mapping."""
    mapping = class_mapping(datamodule)
    if mapping is None:
        return None
    if mapping["binary_from_model_outputs"] and getattr(task, "num_classes", None) != 2:
        collapse_to_binary(task, mapping["model_classes"])
    print(mapping["line"])
    return mapping


def data_source(config: dict[str, Any], datamodule: Any = None) -> dict[str, Any]:
    """Which data a config reads: the data module and ``DATA_KEYS``; with ``datamodule``, its test folder."""
    data = config.get("data") or {}
    init = data.get("init_args") or {}
    out = {"data_module": data.get("class_path"), **{k: init.get(k) for k in DATA_KEYS if init.get(k) is not None}}
    if not init.get("num_folds"):
        out.pop("fold", None)  # a hold-out split: the fold has no meaning
    test_dir = getattr(datamodule, "test_dir", None)
    if test_dir is not None:
        out["test_folder"] = str(test_dir)
    return out


def evaluation_record(tested: Path, config: dict[str, Any], datamodule: Any, mapping: dict | None) -> dict:
    """``run.json`` fields of an evaluation of the fit run ``tested``: ``trained_on`` (the fit's data),
    ``tested_on`` (this command's), ``other_data`` (whether they differ) and ``class_mapping``."""
    trained = data_source(_config(tested))
    now = data_source(config, datamodule)
    keys = ("data_module", "root", "test_root", "csv")
    other = any(_same_path(trained.get(k)) != _same_path(now.get(k)) for k in keys)
    return {"trained_on": trained, "tested_on": now, "other_data": other, "class_mapping": mapping}


def _same_path(value: Any) -> Any:
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value
