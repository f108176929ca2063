"""LightningModules: loss, metrics and steps around a network passed in as ``net``."""

from tumorlab.tasks.base import TumorTask
from tumorlab.tasks.multitask import MultiTaskTask

__all__ = ["TumorTask", "MultiTaskTask"]
