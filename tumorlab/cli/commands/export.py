"""`tumorlab export`: its parser and what it runs (tumorlab.compression.export, imported lazily)."""

from __future__ import annotations

import argparse

from tumorlab.cli.quiet import quiet_trainers

__all__ = ["add_parser"]


@quiet_trainers()
def _export(ns: argparse.Namespace) -> int:
    from tumorlab.compression.export import export_run

    path = export_run(ns.ckpt_path, out=ns.out, dynamic_batch=ns.dynamic_batch, opset=ns.opset, check=not ns.no_check)
    print(f"exported: {path}")
    return 0


def add_parser(sub) -> None:
    """Add ``export`` to the subcommands ``sub``."""
    export = sub.add_parser(
        "export",
        help="export a trained run's network to ONNX with its preprocessing as metadata",
        description="Write a self-contained ONNX file of the run's network; image size, mean, std, channels, "
        "class names and the task are stored as ONNX metadata_props, and onnxruntime's outputs are checked "
        "against PyTorch's.",
    )
    export.add_argument("--ckpt_path", required=True, help="a run folder or a checkpoint in it")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx")
    export.add_argument("--out", help="the .onnx file (default: RUN/model.onnx)")
    export.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1 only)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--no-check", action="store_true", help="skip the onnxruntime-against-PyTorch check")
    export.set_defaults(func=_export)
