"""`tumorlab predict-images`: its parser and what it runs (tumorlab.compression.predict_images, imported lazily)."""

from __future__ import annotations

import argparse
import contextlib

from tumorlab.cli.quiet import quiet_trainers
from tumorlab.errors import TumorlabError

__all__ = ["add_parser"]


def _predict_images(ns: argparse.Namespace) -> int:
    from tumorlab.compression.predict_images import predict_images

    if (ns.ckpt_path is None) == (ns.onnx is None):
        raise TumorlabError("predict-images needs exactly one of --ckpt_path RUN and --onnx FILE")
    with quiet_trainers() if ns.ckpt_path is not None else contextlib.nullcontext():
        summary = predict_images(
            ns.paths, ckpt_path=ns.ckpt_path, onnx=ns.onnx, out=ns.out, batch_size=ns.batch_size, masks=not ns.no_masks
        )
    print(summary)
    return 0


def add_parser(sub) -> None:
    """Add ``predict-images`` to the subcommands ``sub``."""
    predict = sub.add_parser(
        "predict-images",
        help="predict image files, folders or globs with a run or an exported ONNX file",
        description="Apply the model's own preprocessing to each image and write predictions.csv (file, "
        "predicted class, probabilities; an error column for unreadable files); segmentation models also write "
        "a mask PNG and an overlay per image.",
    )
    predict.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    predict.add_argument("--ckpt_path", help="a run folder or a checkpoint in it")
    predict.add_argument("--onnx", help="an ONNX file written by `tumorlab export` (onnxruntime only, no torch)")
    predict.add_argument("--out", help="output folder (default: a new folder beside the run or the ONNX file)")
    predict.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    predict.add_argument("--no-masks", action="store_true", help="segmentation: no mask PNGs or overlays")
    predict.set_defaults(func=_predict_images)
