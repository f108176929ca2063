"""What the command adds to a config for transfer learning: the plateau scheduler's mode, timm-safe sync-BN, and
whether networks read their starting weights.

- ``ReduceLROnPlateau``'s ``mode`` follows ``model.monitor`` (``monitor_mode``: ``min`` for losses, else
  ``max``). jsonargparse fills in the scheduler's default ``mode: min``, so only a ``mode`` the user wrote (in a
  YAML or on the command line) can contradict the monitor; that is a ``ConfigError`` before anything is written.
- ``trainer.sync_batchnorm: true`` becomes the ``TimmSyncBatchNorm`` plugin (``tumorlab.training.sync_batchnorm``):
  Lightning's own converter drops the activation of timm's BatchNorm + activation layers.
- ``validate``, ``test``, ``predict`` of a checkpoint and a resumed ``fit`` build the networks without reading
  their starting weights (``weights_file``, ``encoder_weights_file``, ``pretrained``, ``init_from``): the
  checkpoint replaces every weight, so those files need not exist any more.
"""

from __future__ import annotations

import sys

from jsonargparse import Namespace

from tumorlab.errors import ConfigError
from tumorlab.links import explicit_value
from tumorlab.tasks.metrics import monitor_mode

__all__ = ["SYNC_BN_PLUGIN", "complete_transfer", "weights_from_checkpoint"]

SYNC_BN_PLUGIN = "tumorlab.training.sync_batchnorm.TimmSyncBatchNorm"


def complete_transfer(cfg: Namespace, explicit: Namespace | None) -> None:
    """Set the plateau scheduler's mode from the monitor and swap Lightning's sync-BN for timm's (in place)."""
    model = cfg.get("model")
    init_args = model.get("init_args") if isinstance(model, Namespace) else None
    scheduler = init_args.get("scheduler") if isinstance(init_args, Namespace) else None
    if isinstance(scheduler, Namespace) and str(scheduler.get("class_path", "")).endswith("ReduceLROnPlateau"):
        monitor = init_args.get("monitor") or "val/loss"
        wanted = monitor_mode(monitor)
        given = explicit_value(explicit, "model.init_args.scheduler.init_args.mode")
        if given is not None and given != wanted:
            way = "falls" if wanted == "min" else "rises"
            raise ConfigError(
                f"model.scheduler ReduceLROnPlateau has mode {given!r} but model.monitor {monitor} improves when it "
                f"{way}: set mode: {wanted} (or leave mode out: tumorlab derives it from the monitor)"
            )
        if scheduler.get("init_args") is None:
            scheduler.init_args = Namespace()
        scheduler.init_args.mode = wanted
    trainer = cfg.get("trainer")
    if isinstance(trainer, Namespace) and trainer.get("sync_batchnorm"):
        plugins = trainer.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(str(getattr(p, "class_path", p)) == SYNC_BN_PLUGIN for p in plugins):
            plugins.append(Namespace(class_path=SYNC_BN_PLUGIN, init_args=Namespace()))
        trainer.plugins = plugins
        trainer.sync_batchnorm = False
        print(
            "tumorlab: note: trainer.sync_batchnorm uses timm's converter (TimmSyncBatchNorm plugin), which keeps "
            "the activation of timm's BatchNorm + activation layers",
            file=sys.stderr,
        )


def weights_from_checkpoint(subcommand: str, cfg: Namespace) -> bool:
    """Whether the networks of this command get every weight from a checkpoint (test, validate, predict of a
    checkpoint; a resumed fit), so their starting weights are not read."""
    return bool(cfg.get("ckpt_path"))
