"""LightningModules: loss, metrics and steps around a network passed in as ``net``."""

from tumorlab.tasks.base import TumorTask
from tumorlab.tasks.classification import ClassificationTask
from tumorlab.tasks.multitask import MultiTaskTask
from tumorlab.tasks.segmentation import SegmentationTask

__all__ = ["ClassificationTask", "MultiTaskTask", "SegmentationTask", "TumorTask"]
