"""What a ``fit`` adds to Lightning's Trainer: ``callbacks`` (resume, guards, best checkpoint, RNG state),
``epoch_log`` (metrics.csv, one line per epoch, curves) and ``loggers`` (the W&B logger). Nothing is imported here.
"""
