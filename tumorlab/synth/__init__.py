"""Synthetic brain-MRI phantoms written in the on-disk layouts of the real data sets."""

from tumorlab.synth.layouts import FOLDER_CLASSES, write_folders, write_lgg
from tumorlab.synth.phantom import TUMOUR_KINDS, render_slice, sample_anatomy, sample_tumour

__all__ = [
    "FOLDER_CLASSES",
    "TUMOUR_KINDS",
    "render_slice",
    "sample_anatomy",
    "sample_tumour",
    "write_folders",
    "write_lgg",
]
