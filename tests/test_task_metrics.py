"""Task metrics across runs of one task object: validate before fit, per-class metrics, the best monitored value
(sanity check excluded, carried over a resume), and `tumorlab validate` before any fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback

from tests.conftest import quiet_trainer
from tests.helpers import ShapesDataModule
from tumorlab.models import CNN9, UNetWithClassifier
from tumorlab.runs.folders import RUN_DIR_ENV
from tumorlab.tasks import ClassificationTask, MultiTaskTask
from tumorlab.tasks.classification import CONFUSION_FILE

REPO = Path(__file__).resolve().parents[1]


def _task(kind: str, **kw):
    if kind == "classification":
        return ClassificationTask(CNN9(num_classes=3, width=4), **kw)
    net = UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), num_classes=2)
    return MultiTaskTask(net, **kw)


@pytest.mark.parametrize("kind", ["classification", "multitask"])
def test_validate_before_fit_then_fit_and_test_on_one_task(kind, tmp_path):
    dm = ShapesDataModule(num_classes=3 if kind == "classification" else 2, n=24, batch_size=8)
    task = _task(kind)
    names = [n.replace(" ", "_") for n in dm.class_names]
    # Default inference_mode=True: validate() runs under inference mode, fit's validation under no_grad.
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, num_sanity_val_steps=2)
    val = trainer.validate(task, dm, verbose=False)[0]
    trainer.fit(task, dm)
    fitted = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tests = [trainer.test(task, dm, verbose=False)[0] for _ in range(2)]
    for result, split in ((val, "val"), (fitted, "val"), *((t, "test") for t in tests)):
        for name in names:
            assert f"{split}/f1_{name}" in result and f"{split}/recall_{name}" in result, (split, sorted(result))
    assert tests[0] == tests[1]
    # Each epoch counts its own samples only: the states were reset between validate, sanity check, fit and test.
    val_matrix = task.confusion["val_split"].compute().numpy()
    assert val_matrix.sum() == 24
    rows = val_matrix.sum(1)
    for k, name in enumerate(names):
        if rows[k]:
            assert fitted[f"val/recall_{name}"] == pytest.approx(val_matrix[k, k] / rows[k], abs=1e-6)
    record = json.loads((tmp_path / CONFUSION_FILE).read_text())
    assert np.array(record["matrix"]).sum() == 24


class _RecordMonitor(Callback):
    """The monitored value and its best after every validation epoch that is not the sanity check."""

    def __init__(self, monitor: str) -> None:
        self.monitor, self.seen = monitor, []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.seen.append((float(metrics[self.monitor]), float(metrics[f"{self.monitor}_best"])))


@pytest.mark.parametrize(("monitor", "best"), [("val/loss", min), ("val/acc", max)])
def test_best_monitored_value_skips_the_sanity_check_and_survives_a_resume(monitor, best, tmp_path):
    torch.manual_seed(0)
    dm = ShapesDataModule(num_classes=3, n=24, batch_size=8)
    optimizer = lambda p: torch.optim.Adam(p, lr=1e-2)  # noqa: E731
    task = _task("classification", monitor=monitor, optimizer=optimizer)
    record = _RecordMonitor(monitor)
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=2, num_sanity_val_steps=1, callbacks=[record])
    trainer.fit(task, dm)
    values = [v for v, _ in record.seen]
    assert len(values) == 3 and task.monitor_best.update_count == 3, "the sanity check must not count"
    assert [b for _, b in record.seen] == pytest.approx([best(values[: i + 1]) for i in range(3)])
    trainer.save_checkpoint(tmp_path / "last.ckpt")

    resumed = _task("classification", monitor=monitor, optimizer=optimizer)
    again = _RecordMonitor(monitor)
    trainer = quiet_trainer(tmp_path, max_epochs=4, limit_train_batches=2, num_sanity_val_steps=1, callbacks=[again])
    trainer.fit(resumed, dm, ckpt_path=tmp_path / "last.ckpt")
    ((value, best_after),) = again.seen
    assert resumed.monitor_best.update_count == 2, "the checkpoint's best, then the one new epoch"
    assert best_after == pytest.approx(best(record.seen[-1][1], value))


def test_metric_states_stay_out_of_the_checkpointed_weights():
    assert all(k.startswith("net.") for k in _task("classification").state_dict())
    keys = set(_task("multitask", loss_balance="uncertainty").state_dict())
    assert {k for k in keys if not k.startswith("net.")} == {"log_var_seg", "log_var_cls"}


def test_cli_validate_before_any_fit_writes_val_metrics(lgg_phantom, tmp_path, monkeypatch):
    from tumorlab.cli.main import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    argv = ["validate", "--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(lgg_phantom)]
    argv += ["--data.image_size", "32", "--trainer.limit_val_batches", "2", "--run.root", str(tmp_path)]
    assert main([*argv, "--trainer.logger", "false"]) == 0
    (run_json,) = tmp_path.glob("*/*_validate/run.json")
    metrics = json.loads(run_json.read_text())["val_metrics"]
    assert {"loss", "loss_seg", "loss_cls", "dice", "dice_volume", "acc", "f1_tumour", "dice_best"} <= set(metrics)
    assert metrics["dice_best"] == pytest.approx(metrics["dice"])  # the demo monitors val/dice


def test_a_class_missing_from_a_split_is_reported_once_not_hidden_as_auroc_0(capsys):
    from types import SimpleNamespace

    task = ClassificationTask(CNN9(num_classes=2, width=4), monitor="val/auroc")
    task._trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True)
    only_no_tumour = torch.tensor([[5, 1], [0, 0]])  # rows: true class; no tumour slice in this split
    task._warn_missing_classes("val", only_no_tumour, ["no_tumour", "tumour"])
    task._warn_missing_classes("val", only_no_tumour, ["no_tumour", "tumour"])
    err = capsys.readouterr().err
    assert err.count("tumorlab: warning: the val split holds no sample of tumour") == 1
    assert "so is the monitor val/auroc" in err
    task._warn_missing_classes("test", torch.tensor([[5, 1], [2, 3]]), ["no_tumour", "tumour"])
    assert capsys.readouterr().err == ""  # both classes present: nothing to say


def test_epoch_metrics_count_every_batch_of_the_epoch(tmp_path):
    """Metric objects are logged once per epoch (not at every step): the epoch values must still be those of
    all the epoch's batches (accuracy and pooled Dice recomputed from everything the task scored)."""
    dm = ShapesDataModule(num_classes=2, n=24, batch_size=8)
    net = UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), num_classes=2)
    task = MultiTaskTask(net)
    seen: dict[tuple[str, int], list] = {}
    update_class, update_seg = task._update_class_metrics, task._update_seg_metrics

    def record(split: str, what: str, *tensors) -> None:
        if not task.trainer.sanity_checking:
            key = (split, what, task.trainer.current_epoch)
            seen.setdefault(key, []).append([t.detach().clone() for t in tensors])

    def class_spy(split, logits, labels):
        record(split, "class", logits.softmax(1)[:, 1], labels)
        update_class(split, logits, labels)

    def seg_spy(split, mask_logits, batch):
        record(split, "seg", mask_logits > 0, batch["mask"] > 0)
        update_seg(split, mask_logits, batch)

    task._update_class_metrics, task._update_seg_metrics = class_spy, seg_spy
    trainer = quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=1)
    trainer.fit(task, dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for split in ("train", "val"):
        probs, labels = (torch.cat(x) for x in zip(*seen[(split, "class", 1)], strict=True))
        preds, masks = (torch.cat(x) for x in zip(*seen[(split, "seg", 1)], strict=True))
        assert len(labels) == 24  # the whole of the last epoch, nothing of the first
        acc = float(((probs > 0.5).long() == labels).float().mean())
        inter, total = float((preds & masks).sum()), float(preds.sum() + masks.sum())
        assert logged[f"{split}/acc"] == pytest.approx(acc, abs=1e-6), split
        assert logged[f"{split}/dice"] == pytest.approx(2 * inter / total if total else 1.0, abs=1e-5), split
