"""Run folders and what is read back from them.

``folders`` (one new folder per command, run.json, checkpoints), ``config`` (a run evaluated as it was trained),
``load`` (``load_run``: a trained run rebuilt from its folder), ``predictions`` (predictions.csv and the metric
tables), ``crossdata`` (a run tested on another data set). Nothing is imported here.
"""

from __future__ import annotations

import importlib
import warnings


def __getattr__(name: str):
    """``tumorlab.runs.new_run_dir`` and the other names of the former module ``tumorlab.runs``: forwarded to
    ``tumorlab.runs.folders`` with a ``DeprecationWarning``, for one release."""
    if name.startswith("__"):
        raise AttributeError(name)
    folders = importlib.import_module("tumorlab.runs.folders")
    if name not in getattr(folders, "__all__", ()):
        raise AttributeError(f"module 'tumorlab.runs' has no attribute {name!r}")
    warnings.warn(
        f"tumorlab.runs.{name} moved to tumorlab.runs.folders.{name}; the old name is removed in a later release",
        DeprecationWarning,
        stacklevel=2,
    )
    value = globals()[name] = getattr(folders, name)  # warned once
    return value
