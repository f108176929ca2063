"""What every tumorlab LightningModule shares: optimiser and scheduler from the config, timing, parameter
counts, class weights, data checks and the best value of the monitored validation metric."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MaxMetric, MinMetric

from tumorlab.errors import ConfigError
from tumorlab.tasks.metrics import monitor_mode

__all__ = ["BEST_CHECKPOINT_KEY", "ClassWeights", "TumorTask", "check_plateau_mode"]

ClassWeights = list[float] | Literal["auto"] | None
BEST_CHECKPOINT_KEY = "tumorlab_monitor_best"


def check_plateau_mode(mode: str, monitor: str) -> None:
    """Refuse a ``ReduceLROnPlateau`` ``mode`` against the direction in which ``monitor`` improves: it would cut
    the learning rate every time the model gets better."""
    wanted = monitor_mode(monitor)
    if mode != wanted:
        way = "falls" if wanted == "min" else "rises"
        raise ConfigError(
            f"model.scheduler ReduceLROnPlateau has mode {mode!r} but model.monitor {monitor} improves when it "
            f"{way}: set mode: {wanted} (or leave mode out: tumorlab derives it from the monitor)"
        )


class TumorTask(LightningModule):
    """Base class: builds the optimiser and scheduler passed in from the config and logs training time.

    Args:
        optimizer: a callable that takes the parameters, e.g. ``torch.optim.Adam`` with ``init_args``.
            Only parameters that require gradients are given to it (frozen layers stay untouched).
        scheduler: a callable that takes the optimiser, or ``None``. ``ReduceLROnPlateau`` watches ``monitor``.
        monitor: the logged metric that a plateau scheduler watches; ``ReduceLROnPlateau``'s ``mode`` follows
            its direction (``min`` for names with ``loss`` in them, else ``max``), and a ``mode`` that contradicts
            it is a ``ConfigError``. When it is a validation metric
            (``val/...``), its best value so far is logged after every validation epoch as ``<monitor>_best``
            (e.g. ``val/auroc_best``): the lowest for names with ``loss`` in them, else the highest. Sanity-check
            batches never count; the best is saved in checkpoints, so a resumed fit continues it.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self._objects_logged: set[tuple[str, str]] = set()  # (split, what) logged this epoch: _log_objects_once
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self._epoch_start = 0.0
        self.train_time_s = 0.0
        self._class_weights_spec: ClassWeights = None
        # The values it sees are already synchronised over DDP ranks (logged with sync_dist or computed by
        # metric objects), so every rank holds the same best and compute() needs no collective call.
        best = MinMetric if monitor_mode(monitor) == "min" else MaxMetric
        self.monitor_best = best(sync_on_compute=False)

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

    def class_names(self) -> list[str]:
        """Class names of the data module when it has them (and they fit the head), else ``"0"``, ``"1"`` ..."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(dm, "class_names", None) or [])
        return [str(n) for n in names] if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

    # -- class weights (cross-entropy) ------------------------------------------------------------------------
    def _init_class_weights(self, class_weights: ClassWeights) -> None:
        """Keep the spec and register ``class_weight`` (``None`` until known for ``"auto"``)."""
        self._class_weights_spec = class_weights
        weights = None
        if isinstance(class_weights, Sequence) and not isinstance(class_weights, str):
            weights = self._checked_weights(class_weights, "model.class_weights")
        elif class_weights not in (None, "auto"):
            raise ConfigError(f"model.class_weights must be a list of floats, 'auto' or null; got {class_weights!r}")
        self.register_buffer("class_weight", weights, persistent=False)

    def _checked_weights(self, weights, source: str) -> torch.Tensor:
        w = torch.as_tensor(list(map(float, weights)), dtype=torch.float32)
        if w.numel() != self.num_classes or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(
                f"{source} must be {self.num_classes} non-negative finite numbers (one per class), got {list(weights)}"
            )
        return w

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is not None:
            self.check_data(dm)
        if self._class_weights_spec == "auto" and self.class_weight is None:
            if dm is None or not callable(getattr(dm, "class_weights", None)):
                raise ConfigError(
                    "model.class_weights is 'auto' but the data module has no class_weights(); give a list instead"
                )
            weights = self._checked_weights(dm.class_weights().tolist(), f"{type(dm).__name__}.class_weights()")
            self.class_weight = weights.to(self.device)
            rank_zero_info(f"class weights (inverse train frequency): {[round(float(x), 4) for x in weights]}")

    # -- optimisation -----------------------------------------------------------------------------------------
    def _step(self, batch: dict, split: str) -> torch.Tensor:
        """Loss of one batch of ``split`` (``train``, ``val``, ``test``), with its metrics updated and logged."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def _start_from(self, init_from: str | None) -> None:
        """Load ``init_from``'s matching weights (``tasks.init_from``) unless a checkpoint will replace them."""
        from tumorlab.models.weights import starting_weights_skipped
        from tumorlab.tasks.init_from import load_init_from

        self.init_from = init_from
        if init_from is not None and not starting_weights_skipped():
            load_init_from(self, init_from)

    def parameter_groups(self) -> list[dict] | list[torch.nn.Parameter]:
        """What the optimiser gets: the parameters that require gradients (subclasses may group them)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:  # layer-wise decay: timm's groups carry a learning-rate scale
            group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            check_plateau_mode(scheduler.mode, self.monitor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable (``requires_grad``) parameters of the task (network and loss weights)."""
        params = list(self.parameters())
        return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}

    def on_fit_start(self) -> None:
        counts = self.parameter_counts()
        groups = self.net.trainable_groups() if callable(getattr(self.net, "trainable_groups", None)) else []
        training = [name for name, trains in groups if trains]
        where = ""
        if groups:
            span = f"{training[0]} .. {training[-1]}" if training else "none"
            where = f"; {len(training)} of {len(groups)} groups train ({span})"
        rank_zero_info(
            f"{type(self.net).__name__}: {counts['trainable']:,} trainable of {counts['total']:,} parameters{where}"
        )
        hparams = {"params/total": counts["total"], "params/trainable": counts["trainable"]}
        if training:
            hparams.update({"params/first_trainable_group": training[0], "params/last_trainable_group": training[-1]})
        for logger in self.loggers:
            logger.log_hyperparams(hparams)

    # -- best value of the monitored validation metric ------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        """Log ``<monitor>_best``: the best ``monitor`` over the validation epochs so far (sanity check excluded,
        so that the untrained model's few sanity batches never count)."""
        if self.trainer.sanity_checking or not self.monitor.startswith("val/"):
            return
        # This epoch's values: epoch-level results are reduced (and synchronised) before this hook runs.
        value = self.trainer.callback_metrics.get(self.monitor)
        if value is None:
            rank_zero_warn(f"model.monitor {self.monitor!r} was not logged in validation; no {self.monitor}_best")
            return
        self.monitor_best.update(torch.as_tensor(value, device=self.monitor_best.device))
        self.log(f"{self.monitor}_best", self.monitor_best.compute(), sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Metric states are not in the state dict; keep the best here so that a resumed fit continues it.
        if self.monitor_best.update_called:
            checkpoint[BEST_CHECKPOINT_KEY] = {"monitor": self.monitor, "value": float(self.monitor_best.compute())}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get(BEST_CHECKPOINT_KEY)
        if best is not None and best.get("monitor") == self.monitor:
            self.monitor_best.reset()
            self.monitor_best.update(torch.tensor(best["value"], device=self.monitor_best.device))

    # -- metrics: reset at the start of each epoch (see tumorlab.tasks.mixins) ----------------------------------
    def _reset_metrics(self, split: str) -> None:
        """Reset the metrics of ``split``; each metric mixin adds its own and calls ``super()``."""
        self._objects_logged.difference_update([key for key in self._objects_logged if key[0] == split])

    def _log_objects_once(self, split: str, what: str) -> bool:
        """True at the first batch of each epoch of ``split`` for the metric objects ``what``, else False.

        Lightning computes a logged metric *object* from its own accumulated state at the epoch's end, however
        often it was logged, so logging it once per epoch gives the same epoch value. Logging it at every step
        instead re-registers it with the result collection each time (a move to the device over every metric
        state): about 0.4 ms per metric per step on the CPU, 1-2 % of a small model's training step.
        """
        if (split, what) in self._objects_logged:
            return False
        self._objects_logged.add((split, what))
        return True

    def on_train_epoch_start(self) -> None:
        # Lightning restores the train/eval modes it captured before the sanity check; the network's own train()
        # keeps frozen BatchNorm layers (frozen since, e.g. by a finetuning callback) in eval mode.
        self.net.train()
        self._reset_metrics("train")
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_metrics("test")

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        self.train_time_s += elapsed
        self.log("train/epoch_time_s", elapsed, sync_dist=True)
        self.log("train/time_s", self.train_time_s, sync_dist=True)
