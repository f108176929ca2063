"""Known, harmless noise that the ``tumorlab`` command silences while it runs a command.

Called by the ``tumorlab`` command only, never on import: importing ``tumorlab.models`` or ``tumorlab.data`` in
another project leaves that project's warnings and logging as they were.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet_known_noise", "quiet_trainers"]

# (message regex, why it is noise for a tumorlab user)
_WARNINGS = (
    # `tumorlab` hands LightningCLI its (rewritten) arguments explicitly while sys.argv is also set
    ("LightningCLI's args parameter is intended", None),
    # tumorlab always passes DiceScore's `average`; torchmetrics warns about its future default regardless
    ("DiceScore metric currently defaults", None),
    # torch's pytree deprecation, raised inside Lightning's own code
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", None),
    # checkpoints carry RNGState/ResumeCheckpoint/BestCheckpoint states that test and predict do not need
    ("Be aware that when using `ckpt_path`, callbacks used to create the checkpoint", None),
)


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet_known_noise() -> None:
    """Silence the warnings and log lines above for the rest of this process (a tumorlab command)."""
    for message, _ in _WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # a config naming a module by its pre-0.2 path: say so once (Python hides DeprecationWarning by default)
    warnings.filterwarnings("default", category=DeprecationWarning, message=r"tumorlab\.\S+ moved to ")
    # Lightning's advertisement for its cloud logger, printed by every Trainer
    # and its accelerator lines where there is none to use (a GPU that is there is still reported)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        _DropMessages("💡 Tip", "GPU available: False", "TPU available: False", "HPU available: False")
    )
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        return
    # OpenCV logs its own warning for every unreadable file; tumorlab reports each as one DataError instead
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


@contextlib.contextmanager
def quiet_trainers() -> Iterator[None]:
    """The prune/bench/export/predict-images commands build Trainers of their own: keep their info lines out while
    the command runs (as a decorator of the command), and give the loggers their levels back after it."""
    quiet_known_noise()
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
