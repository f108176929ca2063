"""tumorlab silences known noise only while it runs a command: importing it elsewhere changes nothing (no warning
filter, logging level or filter, environment variable or matplotlib backend beyond what the libraries it builds
on change when they are imported)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

_PROBE = """
import logging, warnings, cv2, matplotlib
matplotlib.use("pdf")  # a backend of the user's (a notebook's inline one, say): tumorlab must leave it
# the libraries tumorlab builds on add filters of their own on import: load them first
import torch, lightning.pytorch, timm, segmentation_models_pytorch, albumentations
import scipy.ndimage, sklearn.model_selection
import torchmetrics, imagehash, tifffile
import os
def levels():
    named = {n: getattr(lg, "level", None) for n, lg in logging.root.manager.loggerDict.items()}
    return named | {"": logging.root.level}
before = (list(warnings.filters), cv2.utils.logging.getLogLevel(),
          list(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters))
env, levels_before = dict(os.environ), levels()
import tumorlab.data, tumorlab.models, tumorlab.tasks, tumorlab.links
import tumorlab.training.callbacks, tumorlab.training.epoch_log, tumorlab.training.loggers
import tumorlab.runs.predictions, tumorlab.runs.config, tumorlab.cli.messages, tumorlab.cli.lightning
after = (list(warnings.filters), cv2.utils.logging.getLogLevel(),
         list(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters))
assert before == after, (set(map(str, after[0])) - set(map(str, before[0])), before[1:], after[1:])
assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())  # no environment variable set
changed = {n: (levels_before.get(n), v) for n, v in levels().items() if n in levels_before and levels_before[n] != v}
new = {n: v for n, v in levels().items() if n not in levels_before and n.startswith("tumorlab") and v}
assert not changed and not new, (changed, new)  # no logging level changed
from tumorlab.evaluation.figures import plot_confusion
import tempfile, pathlib
plot_confusion([[1, 0], [0, 1]], ["a", "b"], pathlib.Path(tempfile.mkdtemp()) / "c.png")
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
from tumorlab.cli.quiet import quiet_known_noise
quiet_known_noise()
assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
assert len(warnings.filters) > len(before[0])
print("ok")
"""


@pytest.mark.slow  # a fresh interpreter importing the whole stack
def test_importing_tumorlab_leaves_warnings_and_logging_alone():
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_trainer_commands_give_lightning_its_log_levels_back():
    """prune, bench, export and predict-images hide Lightning's info lines while they run, not after."""
    import logging

    from tumorlab.cli.quiet import quiet_trainers

    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = rank_zero.level
    with quiet_trainers():
        assert rank_zero.level == logging.WARNING
    assert rank_zero.level == before

    @quiet_trainers()
    def command() -> int:
        assert rank_zero.level == logging.WARNING
        raise ValueError("a failing command")

    with pytest.raises(ValueError):
        command()
    assert rank_zero.level == before
