"""Segmentation and multi-task losses, per-patient Dice, optimisers and schedulers from YAML, short fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import seed_everything

from tests.conftest import quiet_trainer
from tests.helpers import ShapesDataModule
from tumorlab.data import LGGDataModule
from tumorlab.errors import ConfigError
from tumorlab.models import ResNet3, UNetWithClassifier
from tumorlab.synth import write_lgg
from tumorlab.tasks import ClassificationTask, MultiTaskTask, SegmentationTask
from tumorlab.tasks.losses import dice_bce_loss
from tumorlab.tasks.metrics import VolumeDice


def _unet(num_classes: int = 2) -> UNetWithClassifier:
    return UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), num_classes=num_classes)


def _batch(n: int = 4, size: int = 32) -> dict:
    torch.manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[: n // 2, :, 8:16, 8:16] = 1
    return {
        "image": torch.randn(n, 3, size, size),
        "mask": mask,
        "label": (mask.flatten(1).amax(1) > 0).long(),
        "patient": [f"p{i % 2}" for i in range(n)],
    }


# -- per-patient Dice ---------------------------------------------------------------------------------------
def test_volume_dice_matches_numpy_per_patient():
    rng = np.random.default_rng(0)
    patients = ["TCGA_A", "TCGA_B", "TCGA_C", "TCGA_D"]
    slices = []
    for patient in patients:
        for _ in range(rng.integers(3, 7)):
            pred = rng.random((1, 8, 8)) > 0.6
            target = rng.random((1, 8, 8)) > 0.5
            if patient == "TCGA_C":  # nothing there, nothing predicted: Dice 1
                pred, target = np.zeros_like(pred), np.zeros_like(target)
            if patient == "TCGA_D":  # a tumour missed entirely: Dice 0
                pred = np.zeros_like(pred)
            slices.append((patient, pred, target))
    order = rng.permutation(len(slices))  # one patient's slices spread over batches
    metric = VolumeDice()
    for chunk in np.array_split(order, 4):
        metric.update(
            torch.tensor(np.stack([slices[i][1] for i in chunk])).long(),
            torch.tensor(np.stack([slices[i][2] for i in chunk])).long(),
            [slices[i][0] for i in chunk],
        )
    expected = {}
    for patient in patients:
        p = np.stack([s[1] for s in slices if s[0] == patient])
        t = np.stack([s[2] for s in slices if s[0] == patient])
        denom = p.sum() + t.sum()
        expected[patient] = 1.0 if denom == 0 else 2 * (p & t).sum() / denom
    assert expected["TCGA_C"] == 1.0 and expected["TCGA_D"] == 0.0
    assert float(metric.compute()) == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    keys, dice = metric.per_patient()
    assert len(keys) == len(patients)


# -- joint loss -----------------------------------------------------------------------------------------------
def test_uncertainty_weighting_trains_both_log_variances():
    task = MultiTaskTask(_unet(), loss_balance="uncertainty")
    batch = _batch()
    losses = task.losses(task(batch["image"]), batch)
    s_seg, s_cls = task.log_var_seg, task.log_var_cls
    expected = torch.exp(-s_seg) * losses["loss_seg"] + torch.exp(-s_cls) * losses["loss_cls"] + s_seg + s_cls
    assert torch.isclose(losses["loss"], expected)
    losses["loss"].backward()
    assert s_seg.grad is not None and s_cls.grad is not None and s_seg.grad != 0 and s_cls.grad != 0
    before = (float(s_seg), float(s_cls))
    optimizer = task.configure_optimizers()
    optimizer.step()
    assert float(s_seg) != before[0] and float(s_cls) != before[1]
    assert any(p is s_seg for g in optimizer.param_groups for p in g["params"])


def test_fixed_theta_has_no_learned_weights_and_bad_values_are_refused():
    assert not hasattr(MultiTaskTask(_unet(), theta=0.3), "log_var_seg")
    with pytest.raises(ConfigError, match=r"theta must lie in \[0, 1\]"):
        MultiTaskTask(_unet(), theta=-0.1)


def test_segmentation_task_trains_the_mask_path_only():
    task = SegmentationTask(_unet())
    batch = _batch()
    loss = dice_bce_loss(task(batch["image"]), batch["mask"])
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in task.net.classification_parameters)
    assert all(p.grad is not None for p in task.net.segmentation_parameters)

    class ClassificationOnly:
        num_classes = 2
        task = "classification"

    with pytest.raises(ConfigError, match="needs masks but ClassificationOnly has task 'classification'"):
        task.check_data(ClassificationOnly())


# -- optimisers and schedulers from YAML ----------------------------------------------------------------------
OPTIMISERS = {
    "Adam": ("torch.optim.Adam", {"lr": 0.001}),
    "AdamW": ("torch.optim.AdamW", {"lr": 0.001, "weight_decay": 0.01}),
    "SGD": ("torch.optim.SGD", {"lr": 0.001, "momentum": 0.9}),
    "NAdam": ("torch.optim.NAdam", {"lr": 0.002}),
}
SCHEDULERS = {
    "none": None,
    "ReduceLROnPlateau": ("torch.optim.lr_scheduler.ReduceLROnPlateau", {"mode": "max", "patience": 2}),
    "StepLR": ("torch.optim.lr_scheduler.StepLR", {"step_size": 5, "gamma": 0.5}),
    "cosine": ("torch.optim.lr_scheduler.CosineAnnealingLR", {"T_max": 10}),
}


def _yaml_block(spec) -> dict | None:
    return None if spec is None else {"class_path": spec[0], "init_args": spec[1]}


@pytest.mark.parametrize("opt", sorted(OPTIMISERS))
@pytest.mark.parametrize("sched", sorted(SCHEDULERS))
def test_optimisers_and_schedulers_build_from_yaml(opt, sched):
    import yaml

    parser = ArgumentParser()
    parser.add_subclass_arguments(ClassificationTask, "model")
    config = {
        "model": {
            "class_path": "tumorlab.tasks.ClassificationTask",
            "init_args": {
                "net": {"class_path": "tumorlab.models.ResNet3", "init_args": {"width": 4}},
                "optimizer": _yaml_block(OPTIMISERS[opt]),
                "scheduler": _yaml_block(SCHEDULERS[sched]),
                "monitor": "val/auroc",
            },
        }
    }
    cfg = parser.parse_string(yaml.safe_dump(config))
    task = parser.instantiate_classes(cfg).model
    out = task.configure_optimizers()
    optimizer = out if sched == "none" else out["optimizer"]
    assert type(optimizer).__name__ == opt
    assert optimizer.param_groups[0]["lr"] == OPTIMISERS[opt][1]["lr"]
    if opt == "SGD":
        assert optimizer.param_groups[0]["momentum"] == 0.9
    if sched != "none":
        assert type(out["lr_scheduler"]["scheduler"]).__name__ == SCHEDULERS[sched][0].rsplit(".", 1)[1]
        assert out["lr_scheduler"]["monitor"] == "val/auroc"


# -- short fits improve on the untrained model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_lgg(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_lgg")
    write_lgg(out, patients=12, slices=(8, 10), size=64, seed=11, difficulty=0.1)
    return out


def _fit_improves(task, dm, metric: str, epochs: int, tmp_path) -> tuple[float, float]:
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, num_sanity_val_steps=0)
    before = trainer.validate(task, dm, verbose=False)[0][metric]
    trainer.fit(task, dm)
    after = trainer.validate(task, dm, verbose=False)[0][metric]
    return before, after


def test_classification_fit_with_plateau_scheduler_improves(small_lgg, tmp_path):
    seed_everything(0)
    dm = LGGDataModule(str(small_lgg), image_size=32, batch_size=16, num_workers=0, seed=1)
    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=1)  # noqa: E731
    task = ClassificationTask(
        ResNet3(width=8),
        optimizer=lambda p: torch.optim.Adam(p, lr=3e-3),
        scheduler=plateau,
        monitor="val/auroc",
    )
    before, after = _fit_improves(task, dm, "val/auroc", 6, tmp_path)
    assert after > before + 0.1 and after > 0.8, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["segmentation", "multitask_uncertainty"])
def test_segmentation_fits_improve_dice(tmp_path, kind):
    seed_everything(0)
    dm = ShapesDataModule(num_classes=2, n=64, batch_size=8)
    adam = lambda p: torch.optim.Adam(p, lr=3e-3)  # noqa: E731
    if kind == "segmentation":
        task = SegmentationTask(_unet(), optimizer=adam)
    else:
        task = MultiTaskTask(_unet(), loss_balance="uncertainty", optimizer=adam)
    before, after = _fit_improves(task, dm, "val/dice_volume", 5, tmp_path)
    assert after > before + 0.3 and after > 0.5, (before, after)
