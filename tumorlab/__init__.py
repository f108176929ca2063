"""tumorlab: train, compare and explain brain-tumour MRI classifiers and segmenters with patient-level evaluation.

The package root stays import-light: ``tumorlab --help`` must not pay for torch. Import the parts you need:
``tumorlab.data``, ``tumorlab.models``, ``tumorlab.tasks``, ``tumorlab.synth``; docs/architecture.md shows
where each concern lives.

The modules that lay at the package root before 0.2 (``tumorlab.callbacks``, ``tumorlab.loggers``, ...) still
import, for one release, under their old names: configs and run folders saved earlier name them in
``class_path`` (``tumorlab.callbacks.BestCheckpoint``). Each old name is an alias of the module's new home and
warns once with a ``DeprecationWarning`` naming it; nothing is imported until an old name is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

__version__ = "0.1.0"

# old module -> its home in the layout of docs/architecture.md; removed in the next release. (``tumorlab.runs``
# and ``tumorlab.cli`` are packages now: ``tumorlab.runs`` forwards the old names of ``tumorlab.runs.folders``.)
MOVED_MODULES = {
    "tumorlab.callbacks": "tumorlab.training.callbacks",
    "tumorlab.epoch_log": "tumorlab.training.epoch_log",
    "tumorlab.loggers": "tumorlab.training.loggers",
    "tumorlab.run_config": "tumorlab.runs.config",
    "tumorlab.reports": "tumorlab.runs.predictions",
    "tumorlab.lightning_cli": "tumorlab.cli.lightning",
    "tumorlab.cli_config": "tumorlab.cli.config",
    "tumorlab.cli_errors": "tumorlab.cli.messages",
    "tumorlab.quiet": "tumorlab.cli.quiet",
    "tumorlab.evaluation.loading": "tumorlab.runs.load",
    "tumorlab.evaluation.crossdata": "tumorlab.runs.crossdata",
    "tumorlab.compression.loading": "tumorlab.models.pruned",  # pruned runs' configs name ChannelPruned here
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import an old module name as an alias of its new module (the same module object, so classes and
    functions are identical under both names: a checkpoint or config naming either loads the same thing)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; the old name is removed in a later release: use {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return _Alias(spec.name, importlib.import_module(new))

    def exec_module(self, module):
        sys.modules[module.__name__] = module


class _Alias(types.ModuleType):
    """A module that forwards every attribute to ``target`` (its ``__spec__`` and name stay its own)."""

    def __init__(self, name: str, target: types.ModuleType) -> None:
        super().__init__(name, target.__doc__)
        self.__dict__["_target"] = target

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_target"], name)

    def __dir__(self):
        return dir(self.__dict__["_target"])


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
