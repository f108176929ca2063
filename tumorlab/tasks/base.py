"""What every tumorlab LightningModule shares: optimiser and scheduler from the config, timing, data checks."""

from __future__ import annotations

import time

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from tumorlab.errors import ConfigError

__all__ = ["TumorTask"]


class TumorTask(LightningModule):
    """Base class: builds the optimiser and scheduler passed in from the config and logs training time.

    Args:
        optimizer: a callable that takes the parameters, e.g. ``torch.optim.Adam`` with ``init_args``.
        scheduler: a callable that takes the optimiser, or ``None``. ``ReduceLROnPlateau`` watches ``monitor``.
        monitor: the logged metric that a plateau scheduler watches.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self._epoch_start = 0.0
        self.train_time_s = 0.0

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def check_data(self, datamodule) -> None:
        """Raise ``ConfigError`` if the data module's number of classes disagrees with the model's head."""
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ConfigError(
                f"model.net.num_classes is {self.num_classes} but the data module "
                f"{type(datamodule).__name__} has {data_classes} classes; set them equal"
            )

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.datamodule is not None:
            self.check_data(self.trainer.datamodule)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        self.train_time_s += elapsed
        self.log("train/epoch_time_s", elapsed, sync_dist=True)
        self.log("train/time_s", self.train_time_s, sync_dist=True)
