"""What the ``tumorlab`` command adds to a config and checks in it before anything is built.

The model shorthand (``--model CNN9``), the shared defaults of every experiment, the callbacks that only ``fit``
needs, the W&B mode and the hardware check. Nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib
import netrc
import os
import sys

from jsonargparse import Namespace

from tumorlab.errors import ConfigError

__all__ = [
    "ARCHITECTURE_TASKS",
    "FIT_ONLY",
    "TRAINER_DEFAULTS",
    "check_hardware",
    "configure_wandb_mode",
    "expand_model_shorthand",
    "has_callback",
    "is_fit_only",
    "is_monitored_checkpoint",
    "modernize_class_paths",
]

# Architecture -> the task that trains it: `--model CNN9` is shorthand for
# `--model ClassificationTask --model.net CNN9`, `--model UNetWithClassifier` for
# `--model MultiTaskTask --model.net UNetWithClassifier` (train it alone with `--model SegmentationTask`).
ARCHITECTURE_TASKS = {
    "CNN9": "ClassificationTask",
    "SmallCNN": "ClassificationTask",
    "ResNet3": "ClassificationTask",
    "TimmClassifier": "ClassificationTask",
    "UNetWithClassifier": "MultiTaskTask",
}


def expand_model_shorthand(argv: list[str]) -> list[str]:
    """Rewrite ``--model <Architecture>`` into the task that trains it with that architecture as ``net``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg == "--model" and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--model="):
            value, step = arg.split("=", 1)[1], 1
        name = value.rsplit(".", 1)[-1] if value else None
        if name in ARCHITECTURE_TASKS:
            out += ["--model", ARCHITECTURE_TASKS[name], "--model.net", value]
            i += step
            continue
        out.append(arg)
        i += 1
    return out


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def configure_wandb_mode() -> None:
    """Log to W&B offline unless the user has credentials: no account, no network, never a login prompt.

    ``WANDB_MODE=online`` without credentials falls back to offline with a warning instead of waiting for a login.
    Offline, W&B's own console output (a page of run history and a second sync hint) is silenced: tumorlab
    prints the one line that matters, how to upload the run later.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode not in ("offline", "disabled", "dryrun") and not _has_wandb_credentials():
        if mode == "online":
            print(
                "tumorlab: warning: WANDB_MODE=online but no W&B credentials (wandb login or WANDB_API_KEY); "
                "logging offline instead",
                file=sys.stderr,
            )
        os.environ["WANDB_MODE"] = "offline"
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        os.environ.setdefault("WANDB_SILENT", "true")


# What every experiment shares, set once here instead of in each config file (a config may override any of it).
TRAINER_DEFAULTS = {
    "trainer.logger": {"class_path": "tumorlab.training.loggers.WandbLogger", "init_args": {"project": "tumorlab"}},
    "trainer.devices": 1,
    "trainer.log_every_n_steps": 10,
    # the task prints one line (`CNN9: 73,978 trainable of 73,978 parameters`); Lightning's table is opt-in
    "trainer.enable_model_summary": False,
}


# Callbacks the command adds to fit only; a run's own config brings them along to test, where they are dropped.
FIT_ONLY = {
    f"tumorlab.training.callbacks.{n}" for n in ("RNGState", "ResumeCheckpoint", "BestCheckpoint", "FiniteGuard")
}
FIT_ONLY.add("tumorlab.training.epoch_log.EpochMetrics")


def is_fit_only(callback) -> bool:
    """A callback config of ``FIT_ONLY``, by its class name: a run saved before the package layout moved names
    ``tumorlab.callbacks.RNGState`` where today's names ``tumorlab.training.callbacks.RNGState``."""
    class_path = str(getattr(callback, "class_path", ""))
    name = class_path.rsplit(".", 1)[-1]
    return class_path.startswith("tumorlab.") and any(f.rsplit(".", 1)[-1] == name for f in FIT_ONLY)


def has_callback(callbacks, class_path: str) -> bool:
    name = class_path.rsplit(".", 1)[-1]
    return any(str(getattr(cb, "class_path", "")).rsplit(".", 1)[-1] == name for cb in callbacks)


def is_monitored_checkpoint(callback) -> bool:
    """A ``ModelCheckpoint`` (an instance or its config) that keeps a best model, not ``ResumeCheckpoint``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tumorlab.training.callbacks import ResumeCheckpoint

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


def modernize_class_paths(node) -> None:
    """Rewrite ``class_path`` values that name a module's pre-0.2 path (``tumorlab.callbacks.FiniteGuard``) to its
    new one (``tumorlab.training.callbacks.FiniteGuard``) in a config, in place: the old names import for one
    release only (``tumorlab.MOVED_MODULES``), and the config.yaml a run saves must load after that."""
    from tumorlab import MOVED_MODULES

    if isinstance(node, list):
        for item in node:
            modernize_class_paths(item)
        return
    if not isinstance(node, (Namespace, dict)):
        return
    path = node.get("class_path")
    if isinstance(path, str):
        module, _, name = path.rpartition(".")
        if module in MOVED_MODULES:
            node["class_path"] = f"{MOVED_MODULES[module]}.{name}"
    children = vars(node).values() if isinstance(node, Namespace) else node.values()  # a Namespace's own level
    for value in list(children):
        modernize_class_paths(value)
