"""After training: make a network smaller and faster, measure it, export it, and run it on image files.

- ``prune``: global L1 magnitude pruning (``torch.nn.utils.prune``), channel pruning (Torch-Pruning) and the
  ``MagnitudePruning`` Lightning callback;
- ``study``: ``tumorlab prune``, the pruning table of a run (test metrics before and after fine-tuning, size,
  batch-1 latency) with one run folder per pruned model (a channel-pruned one names
  ``tumorlab.models.pruned.ChannelPruned`` in its config; ``tumorlab.runs.load.load_run`` rebuilds it);
- ``latency``: ``tumorlab bench latency`` (CPU median/IQR latency, images/s, parameters, MACs, file sizes);
- ``export``: ``tumorlab export`` (ONNX with the preprocessing as metadata, checked against PyTorch);
- ``predict_images``: ``tumorlab predict-images`` on files, folders or globs, with a run or an ONNX file.

Submodules are imported on use (``tumorlab --help`` imports none of them).
"""
