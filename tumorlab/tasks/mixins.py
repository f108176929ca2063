"""What the tasks measure, per split: classification metrics (``ClassMetricsMixin``), segmentation metrics
(``SegMetricsMixin``), and the check that segmentation data comes with masks.

The metrics of each split live in ``nn.ModuleDict``s keyed ``split_key(split)``: ``"train_split"``,
``"val_split"``, ``"test_split"``. The split name alone cannot be a key: a ModuleDict key may not shadow an
``nn.Module`` attribute, and ``train`` is ``Module.train``. Logged names are ``<split>/<metric>``.

Every metric of a split is reset at the start of that split's epoch (``TumorTask._reset_metrics``), under
the grad mode of the loop that then updates it. Lightning also resets the metrics logged as objects, but at
the end of the loop, and torchmetrics leaves resetting to whoever calls ``compute()`` by hand (the per-class
metrics and the confusion matrix). A reset at the end of ``validate()`` or ``test()`` runs under inference
mode, and states created there cannot be updated in place by a later fit's validation (``no_grad``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.tasks.metrics import (
    VolumeDice,
    classification_metrics,
    confusion_matrix,
    per_class_metrics,
    segmentation_metrics,
)

__all__ = [
    "CONFUSION_FILE",
    "ClassMetricsMixin",
    "SegMetricsMixin",
    "SPLITS",
    "check_has_masks",
    "class_slug",
    "split_key",
]

CONFUSION_FILE = "confusion_matrix.json"
SPLITS = ("train", "val", "test")
_EVAL_SPLITS = ("val", "test")


def split_key(split: str) -> str:
    """The ``nn.ModuleDict`` key of a split's metrics: ``"val"`` -> ``"val_split"``."""
    return f"{split}_split"


def class_slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "class"


def check_has_masks(task_name: str, datamodule) -> None:
    """Raise ``ConfigError`` if ``datamodule`` says it yields no masks (e.g. LGG with ``task: classification``)."""
    data_task = getattr(datamodule, "task", None)
    if isinstance(data_task, str) and data_task == "classification":
        raise ConfigError(
            f"{task_name} needs masks but {type(datamodule).__name__} has task 'classification'; "
            "set data.init_args.task to 'segmentation' or 'multitask'"
        )


class ClassMetricsMixin:
    """Classification metrics of a task: per split ``<split>/acc|precision|recall|f1|f2|auroc`` (metric
    objects), per class ``<split>/<metric>_<class>`` for val and test (computed and synchronised at epoch end),
    and the test confusion matrix, written to ``confusion_matrix.json`` in the run folder.

    Modules: ``class_metrics`` (every split), ``per_class`` and ``confusion`` (val and test), each an
    ``nn.ModuleDict`` keyed ``split_key(split)``.
    """

    def _add_class_metrics(self, num_classes: int) -> None:
        self.class_metrics = nn.ModuleDict(
            {split_key(s): classification_metrics(num_classes).clone(prefix=f"{s}/") for s in SPLITS}
        )
        self.per_class = nn.ModuleDict({split_key(s): per_class_metrics(num_classes) for s in _EVAL_SPLITS})
        self.confusion = nn.ModuleDict({split_key(s): confusion_matrix(num_classes) for s in _EVAL_SPLITS})

    def _update_class_metrics(self, split: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = logits.detach().float().softmax(dim=1)
        metrics = self.class_metrics[split_key(split)]
        metrics.update(probs[:, 1] if self.num_classes == 2 else probs, labels)
        if self._log_objects_once(split, "class"):
            self.log_dict(metrics, batch_size=labels.shape[0], on_step=False, on_epoch=True, prog_bar=split == "val")
        if split != "train":
            self.per_class[split_key(split)].update(probs, labels)
            self.confusion[split_key(split)].update(probs, labels)

    def _reset_metrics(self, split: str) -> None:
        super()._reset_metrics(split)
        self.class_metrics[split_key(split)].reset()
        if split != "train":
            self.per_class[split_key(split)].reset()
            self.confusion[split_key(split)].reset()

    def _log_class_epoch(self, split: str) -> None:
        per_class, confusion = self.per_class[split_key(split)], self.confusion[split_key(split)]
        if not confusion.update_called:
            return
        names = self.class_names()
        for metric, values in per_class.compute().items():  # compute() synchronises over DDP ranks
            for name, value in zip(names, values, strict=True):
                self.log(f"{split}/{metric}_{class_slug(name)}", value, sync_dist=False)
        matrix = confusion.compute()
        self._warn_missing_classes(split, matrix, names)
        if split == "test":
            # trainer.log_dir broadcasts under DDP: every rank must ask, only rank zero writes.
            folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            if self.trainer.is_global_zero:
                self.write_confusion_matrix(matrix, names, folder)

    def _warn_missing_classes(self, split: str, matrix: torch.Tensor, names: list[str]) -> None:
        """Say once per split when a class has no sample in it: AUROC and that class's recall are then
        undefined, and torchmetrics logs 0 for them, which a monitor would take at face value. (The test
        report marks them undefined, ``evaluation.metrics``.)"""
        missing = [name for name, count in zip(names, matrix.sum(dim=1).tolist(), strict=True) if count == 0]
        warned = self.__dict__.setdefault("_warned_missing", set())
        if not missing or split in warned or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        warned.add(split)
        monitored = f"; so is the monitor {self.monitor}" if self.monitor.endswith("auroc") else ""
        print(
            f"tumorlab: warning: the {split} split holds no sample of {', '.join(missing)}: {split}/auroc and "
            f"that recall are undefined, and torchmetrics logs 0 for them{monitored}",
            file=sys.stderr,
        )

    def write_confusion_matrix(self, matrix: torch.Tensor, names: list[str], folder: Path) -> Path:
        """Write ``confusion_matrix.json`` (rows: true class, columns: predicted class) into ``folder``."""
        path = folder / CONFUSION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"class_names": names, "rows": "true class", "columns": "predicted class"}
        record["matrix"] = matrix.long().tolist()
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path

    # super(): TumorTask's own hooks (the best monitored value) run after these.
    def on_validation_epoch_end(self) -> None:
        self._log_class_epoch("val")
        super().on_validation_epoch_end()

    def on_test_epoch_end(self) -> None:
        self._log_class_epoch("test")
        super().on_test_epoch_end()


class SegMetricsMixin:
    """Per split ``dice`` and ``iou`` (pooled over all pixels) and ``dice_volume`` (mean per-patient Dice).

    Masks of several channels (the regions of a volume data set's label map) are pooled over their channels here;
    per-region scores per volume come from ``tumorlab.evaluation.volumes``.

    Modules: ``seg_metrics`` and ``volume_dice``, each an ``nn.ModuleDict`` keyed ``split_key(split)``.
    """

    def _add_seg_metrics(self) -> None:
        self.seg_metrics = nn.ModuleDict({split_key(s): segmentation_metrics().clone(prefix=f"{s}/") for s in SPLITS})
        self.volume_dice = nn.ModuleDict({split_key(s): VolumeDice() for s in SPLITS})

    def _reset_metrics(self, split: str) -> None:
        super()._reset_metrics(split)
        self.seg_metrics[split_key(split)].reset()
        self.volume_dice[split_key(split)].reset()

    def _update_seg_metrics(self, split: str, mask_logits: torch.Tensor, batch: dict) -> None:
        n = mask_logits.shape[0]
        pred, target = (mask_logits.detach() > 0).long(), batch["mask"].long()
        patients = batch.get("patient")
        if pred.shape[1] > 1:  # regions pooled: each channel of a sample counts as one more binary mask
            channels = pred.shape[1]
            pred, target = pred.flatten(0, 1).unsqueeze(1), target.flatten(0, 1).unsqueeze(1)
            patients = None if patients is None else [p for p in patients for _ in range(channels)]
        metrics = self.seg_metrics[split_key(split)]
        metrics.update(pred, target)
        if self._log_objects_once(split, "seg"):
            self.log_dict(metrics, batch_size=n, on_step=False, on_epoch=True, prog_bar=split == "val")
        if patients is not None:
            volume = self.volume_dice[split_key(split)]
            volume.update(pred, target, patients)
            if self._log_objects_once(split, "volume"):
                self.log(f"{split}/dice_volume", volume, batch_size=n, on_step=False, on_epoch=True)
