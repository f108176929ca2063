"""tumorlab: train, compare and explain brain-tumour MRI classifiers and segmenters with patient-level evaluation.

The package root stays import-light: ``tumorlab --help`` must not pay for torch. Import the parts you need:
``tumorlab.data``, ``tumorlab.models``, ``tumorlab.tasks``, ``tumorlab.synth``.
"""

__version__ = "0.1.0"
