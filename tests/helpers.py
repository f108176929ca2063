"""Test-only helpers: a tiny in-memory DataModule that yields batches in the data/task contract."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from torch.utils.data import DataLoader, Dataset


class _Shapes(Dataset):
    """Noise images with a bright square whose size grows with the class; mask = the square (class 0: none)."""

    def __init__(self, n: int, size: int, num_classes: int, seed: int, patients: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.5
        self.masks = torch.zeros(n, 1, size, size)
        for i, label in enumerate(self.labels.tolist()):
            if label == 0:
                continue
            side = 4 + 4 * label
            y, x = torch.randint(0, size - side, (2,), generator=g).tolist()
            self.masks[i, :, y : y + side, x : x + side] = 1
        self.images += 2.0 * self.masks
        self.patients = [f"P{i % patients:02d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "mask": self.masks[i],
            "label": self.labels[i],
            "patient": self.patients[i],
            "image_path": f"img{i}.png",
        }


class ShapesDataModule(LightningDataModule):
    """In-memory contract batches (``image``, ``mask``, ``label``, ``patient``, ``image_path``) for task tests."""

    def __init__(
        self, num_classes: int = 3, size: int = 32, n: int = 48, batch_size: int = 16, seed: int = 0, poison: int = -1
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = [f"class {chr(97 + k)}" for k in range(num_classes)]
        self.in_channels = 3
        self.image_size = size
        self.size, self.n, self.batch_size, self.seed = size, n, batch_size, seed
        self.poison = poison  # index of a training image set to NaN (-1: none), for the NaN guard's tests
        self.datasets: dict[str, _Shapes] = {}

    def setup(self, stage: str | None = None) -> None:
        for k, name in enumerate(("train", "val", "test")):
            self.datasets.setdefault(name, _Shapes(self.n, self.size, self.num_classes, self.seed + k, patients=6))
        if self.poison >= 0:
            self.datasets["train"].images[self.poison, 0, 0, 0] = float("nan")

    def class_weights(self) -> torch.Tensor:
        counts = torch.bincount(self.datasets["train"].labels, minlength=self.num_classes).float()
        w = counts.sum() / counts.clamp_min(1)
        return w / w.mean()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class TinyNet(torch.nn.Module):
    """Pooling + a linear layer: the smallest network the data module can size."""

    # `bias` keeps an argument that no link sets: Lightning's hyper-parameter dump needs one (lightning 2.6).
    def __init__(self, in_channels: int = 3, num_classes: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.layers = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(in_channels, num_classes, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PlainModule(LightningModule):
    """A LightningModule that is not a tumorlab task: no ``monitor``, so no best checkpoint is kept."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["label"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class NaNImagesOnRank(Callback):
    """Puts NaN into the first image of training batch ``batch`` of process ``rank`` only: a fault that one DDP
    process sees and the others do not (before tumorlab's FiniteGuard, which the command adds after it)."""

    def __init__(self, rank: int = 1, batch: int = 1) -> None:
        self.rank, self.batch = rank, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch:
            batch["image"][0].fill_(float("nan"))


class SigintOnRank(Callback):
    """Sends SIGINT (what Ctrl-C sends) to process ``rank`` alone at the start of its training batch ``batch``:
    an interrupt that one DDP process receives while the others train on."""

    def __init__(self, rank: int = 1, batch: int = 2) -> None:
        self.rank, self.batch = rank, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


def assert_logged_metrics_agree(run_dir, tolerance: float = 1e-6) -> list[str]:
    """Every metric that a test run logged in ``run.json`` (``test_metrics``) and that ``compute_metrics`` also
    gives on the run's ``predictions.csv`` agrees within ``tolerance``; an undefined one is null in both, with
    the same reason. Returns the names compared."""
    import json
    from pathlib import Path

    from tumorlab.evaluation.metrics import compute_metrics, dotted, logged_names, parse_predictions
    from tumorlab.runs.load import read_predictions

    record = json.loads((Path(run_dir) / "run.json").read_text())
    logged, reasons = record["test_metrics"], record["test_undefined_metrics"]
    computed = compute_metrics(parse_predictions(read_predictions(Path(run_dir) / "predictions.csv")))
    compared = []
    for name, key in logged_names(computed["class_names"]).items():
        try:
            ours = dotted(computed, key)
        except KeyError:
            continue
        if name not in logged:
            continue
        if ours is None or logged[name] is None:
            assert ours is None and logged[name] is None, f"{name}: logged {logged[name]}, recomputed {ours}"
            assert reasons[name] == computed["undefined"][key]
        else:
            assert abs(logged[name] - ours) <= tolerance, f"{name}: logged {logged[name]}, recomputed {ours}"
        compared.append(name)
    return compared
