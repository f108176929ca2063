"""Synthetic brain-MRI phantoms written in the on-disk layouts of the real data sets (2D slices and volumes)."""

from tumorlab.synth.layouts import FOLDER_CLASSES, write_folders, write_lgg
from tumorlab.synth.phantom import TUMOUR_KINDS, render_slice, sample_anatomy, sample_tumour
from tumorlab.synth.volumes import VOLUME_LAYOUTS, phantom_subject, write_volumes

__all__ = [
    "FOLDER_CLASSES",
    "TUMOUR_KINDS",
    "VOLUME_LAYOUTS",
    "phantom_subject",
    "render_slice",
    "sample_anatomy",
    "sample_tumour",
    "write_folders",
    "write_lgg",
    "write_volumes",
]
