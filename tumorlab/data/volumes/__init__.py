"""Volumes as users download them: NIfTI (BraTS, the Decathlon, nnU-Net raw, any datalist) and DICOM series.

- ``layouts``: where each subject's modalities and label volume are (datalist JSON, BraTS 2021/2023,
  Decathlon, nnU-Net raw, DICOM tree, a subject -> class CSV);
- ``nifti`` / ``dicom``: reading (reoriented to RAS), header checks, writing masks back in the source's geometry;
- ``subjects``: one grid per subject, decoded once; ``labels``: label maps per layout; ``slices``: intensity
  normalisation, slice orientation and selection;
- ``data``: ``VolumeData`` (``VolumeDataModule`` in ``tumorlab.data.modules``).
"""

from tumorlab.data.volumes.data import VolumeData, parse_slice_id, slice_id
from tumorlab.data.volumes.labels import BRATS_REGIONS, LABEL_MAPS, apply_label_map, resolve_label_map
from tumorlab.data.volumes.layouts import LAYOUTS, Subject, canonical_modality, detect_volume_layout, read_layout
from tumorlab.data.volumes.nifti import read_header, read_nifti, write_like

__all__ = [
    "BRATS_REGIONS",
    "LABEL_MAPS",
    "LAYOUTS",
    "Subject",
    "VolumeData",
    "apply_label_map",
    "canonical_modality",
    "detect_volume_layout",
    "parse_slice_id",
    "read_header",
    "read_layout",
    "read_nifti",
    "resolve_label_map",
    "slice_id",
    "write_like",
]
