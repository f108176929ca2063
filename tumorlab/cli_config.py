"""What the ``tumorlab`` command adds to a config and checks in it before anything is built.

The shared defaults of every experiment, the callbacks that only ``fit`` needs, and the hardware check.
"""

from __future__ import annotations

import importlib
import sys

from jsonargparse import Namespace

from tumorlab.errors import ConfigError

__all__ = ["FIT_ONLY", "TRAINER_DEFAULTS", "check_hardware", "has_callback", "is_monitored_checkpoint"]
# What every experiment shares, set once here instead of in each config file (a config may override any of it).
TRAINER_DEFAULTS = {
    "trainer.logger": {"class_path": "tumorlab.loggers.WandbLogger", "init_args": {"project": "tumorlab"}},
    "trainer.devices": 1,
    "trainer.log_every_n_steps": 10,
}


# Callbacks the command adds to fit only; a run's own config brings them along to test, where they are dropped.
FIT_ONLY = {f"tumorlab.callbacks.{n}" for n in ("RNGState", "ResumeCheckpoint", "BestCheckpoint", "FiniteGuard")}
FIT_ONLY.add("tumorlab.epoch_log.EpochMetrics")


def has_callback(callbacks, class_path: str) -> bool:
    name = class_path.rsplit(".", 1)[-1]
    return any(str(getattr(cb, "class_path", "")).rsplit(".", 1)[-1] == name for cb in callbacks)


def is_monitored_checkpoint(callback) -> bool:
    """A ``ModelCheckpoint`` (an instance or its config) that keeps a best model, not ``ResumeCheckpoint``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tumorlab.callbacks import ResumeCheckpoint

    if isinstance(callback, Namespace):
        module, _, name = str(callback.get("class_path", "")).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            return False
        monitor = (callback.get("init_args") or Namespace()).get("monitor")
    else:
        cls, monitor = type(callback), getattr(callback, "monitor", None)
    return isinstance(cls, type) and issubclass(cls, ModelCheckpoint) and cls is not ResumeCheckpoint and bool(monitor)


def check_hardware(trainer_cfg) -> None:
    """Stop early, with the fix, when the config asks for hardware or precision this machine lacks."""
    import torch

    accelerator = str(trainer_cfg.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator is {accelerator!r} but no CUDA GPU is visible here; run on the CPU with "
            "--trainer.accelerator cpu --trainer.devices 1"
        )
    precision = str(trainer_cfg.get("precision") or "32")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision {precision!r} needs a GPU; on the CPU use --trainer.precision bf16-mixed or 32"
        )
    if on_cpu and trainer_cfg.get("sync_batchnorm"):
        # torch's SyncBatchNorm runs on GPUs only; CPU processes keep per-process BatchNorm statistics.
        print("tumorlab: warning: trainer.sync_batchnorm needs GPUs; turned off for this CPU run", file=sys.stderr)
        trainer_cfg.sync_batchnorm = False
