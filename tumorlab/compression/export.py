"""``tumorlab export``: a trained run's network as a self-contained ONNX file that carries its preprocessing.

The file holds the weights and, as ONNX ``metadata_props`` (strings; lists as JSON), everything needed to feed
it: ``tumorlab.task`` (classification, segmentation or multitask), ``tumorlab.image_size``, ``tumorlab.channels``
(the RGB channels fed, e.g. ``[0, 1, 2]``), ``tumorlab.mean`` / ``tumorlab.std`` (one per fed channel, on
intensities / 255), ``tumorlab.brain_crop``, ``tumorlab.class_names`` and ``tumorlab.outputs`` (``logits``; or
``mask_logits`` for segmentation; ``mask_logits`` and ``class_logits`` for the two-headed U-Net). An image is
prepared as in training: RGB, those channels, resized to ``image_size`` (area interpolation when shrinking),
``(x / 255 - mean) / std``, NCHW float32.

After writing, onnxruntime's outputs on a random batch are compared with PyTorch's: they must agree within
``ATOL + RTOL·|y|`` (``ATOL`` 1e-4, ``RTOL`` 1e-3; float32 kernels differ in summation order only).

This module imports torch only inside the functions that export, so ``predict-images --onnx`` can read and
check metadata with onnxruntime and numpy alone.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from tumorlab.errors import ConfigError

__all__ = ["ATOL", "METADATA_KEYS", "RTOL", "check_metadata", "export_onnx", "export_run", "read_metadata"]

ATOL, RTOL = 1e-4, 1e-3
PREFIX = "tumorlab."
METADATA_KEYS = ("task", "image_size", "channels", "mean", "std", "brain_crop", "class_names", "outputs")
_OUTPUTS = {
    "classification": ["logits"],
    "segmentation": ["mask_logits"],
    "multitask": ["mask_logits", "class_logits"],
}


def task_kind(task: Any) -> str:
    """``classification``, ``segmentation`` or ``multitask`` for a tumorlab task."""
    name = type(task).__name__
    kinds = {"ClassificationTask": "classification", "SegmentationTask": "segmentation", "MultiTaskTask": "multitask"}
    if name not in kinds:
        raise ConfigError(f"cannot export a {name}: expected a ClassificationTask, SegmentationTask or MultiTaskTask")
    return kinds[name]


def _exportable(task: Any, kind: str):
    """The task's network returning plain tensors in the order of ``_OUTPUTS[kind]``."""
    from torch import nn

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = task.net

        def forward(self, x):
            out = self.net(x)
            if kind == "classification":
                return getattr(out, "class_logits", out)
            if kind == "segmentation":
                return getattr(out, "mask_logits", out)
            return out.mask_logits, out.class_logits

    return Exported().eval()


def export_onnx(task: Any, path: str | Path, metadata: dict, dynamic_batch: bool = False, opset: int = 17) -> Path:
    """Write ``task``'s network to ``path`` with ``metadata`` (see the module docstring) as metadata_props."""
    import onnx
    import torch

    kind = metadata["task"]
    module = _exportable(task, kind)
    size, channels = int(metadata["image_size"]), len(metadata["channels"])
    example = torch.zeros(1, channels, size, size)
    outputs = _OUTPUTS[kind]
    axes = {name: {0: "batch"} for name in ["image", *outputs]} if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Input checks of the networks (image side, divisibility) compare shapes the tracer records as constants:
    # right for the fixed image size, and the batch dimension is never checked, so its warnings are noise.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module, (example,), str(path), input_names=["image"], output_names=outputs,
            dynamic_axes=axes, opset_version=opset, dynamo=False,
        )  # fmt: skip
    model = onnx.load(str(path))
    for key, value in {**metadata, "outputs": outputs}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def read_metadata(path: str | Path) -> dict:
    """The ``tumorlab.*`` metadata of an exported file, values decoded; ``DataError``-style ``ConfigError`` when
    the file is no tumorlab export."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ConfigError(f"{path}: not a readable ONNX file ({str(err).splitlines()[0][:200]})") from None
    props = session.get_modelmeta().custom_metadata_map
    meta = {}
    for key in METADATA_KEYS:
        if PREFIX + key not in props:
            raise ConfigError(
                f"{path}: ONNX metadata lacks {PREFIX}{key}; export the model with `tumorlab export`, which "
                "records the preprocessing"
            )
        value = props[PREFIX + key]
        meta[key] = value if key == "task" else json.loads(value)
    meta["session"] = session
    return meta


def check_metadata(meta: dict, path: str | Path) -> None:
    """Refuse metadata that contradicts itself or the ONNX graph's input and outputs (naming both values)."""
    session = meta["session"]
    shape = session.get_inputs()[0].shape  # [N, C, H, W]; N may be a name ("batch")
    channels, size = len(meta["channels"]), int(meta["image_size"])
    problems = []
    if len(meta["mean"]) != channels or len(meta["std"]) != channels:
        means, stds = len(meta["mean"]), len(meta["std"])
        problems.append(f"{channels} channels {meta['channels']} but {means} means and {stds} stds")
    if len(shape) != 4 or shape[1] != channels:
        problems.append(f"the graph's input is {shape} but the metadata feeds {channels} channels")
    elif all(isinstance(s, int) for s in shape[2:]) and list(shape[2:]) != [size, size]:
        problems.append(f"the graph's input is {shape[2]}×{shape[3]} but tumorlab.image_size is {size}")
    outputs = [o.name for o in session.get_outputs()]
    if outputs != meta["outputs"] or meta["task"] not in _OUTPUTS or meta["outputs"] != _OUTPUTS[meta["task"]]:
        problems.append(f"outputs {outputs} do not fit task {meta['task']!r} (expected {_OUTPUTS.get(meta['task'])})")
    if meta["task"] != "segmentation":
        width = session.get_outputs()[-1].shape[-1]
        if isinstance(width, int) and width != len(meta["class_names"]):
            problems.append(f"the class output has {width} entries but {len(meta['class_names'])} class names")
    if problems:
        raise ConfigError(f"{path}: the ONNX metadata does not match the model: " + "; ".join(problems))


def run_metadata(run) -> dict:
    """The metadata of a loaded run (``tumorlab.runs.load.LoadedRun``): its data module's
    preprocessing and classes."""
    dm = run.datamodule
    norm = dm.normalization
    names = [str(n) for n in (getattr(dm, "class_names", None) or [])]
    return {
        "task": task_kind(run.task),
        "image_size": int(dm.image_size),
        "channels": [int(c) for c in dm.channels],
        "mean": [float(v) for v in norm["mean"]],
        "std": [float(v) for v in norm["std"]],
        "brain_crop": bool(getattr(dm, "brain_crop", False)),
        "class_names": names,
        "architecture": type(run.task.net).__name__,
        "run": str(run.run_dir),
    }


def check_parity(task: Any, path: Path, metadata: dict, batch: int = 2) -> float:
    """Largest |onnxruntime − PyTorch| on a random batch; ``ConfigError`` beyond ``ATOL + RTOL·|y|``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    size, channels = int(metadata["image_size"]), len(metadata["channels"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    static = isinstance(session.get_inputs()[0].shape[0], int)
    x = torch.randn(1 if static else batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _exportable(task, metadata["task"])(x)
    expected = [e.numpy() for e in (expected if isinstance(expected, tuple) else (expected,))]
    got = session.run(None, {"image": x.numpy()})
    worst = 0.0
    for name, e, g in zip(metadata.get("outputs", _OUTPUTS[metadata["task"]]), expected, got, strict=True):
        worst = max(worst, float(np.abs(e - g).max()))
        if not np.allclose(g, e, atol=ATOL, rtol=RTOL):
            raise ConfigError(
                f"{path}: onnxruntime's {name} differs from PyTorch's by up to {np.abs(e - g).max():.2e} "
                f"(tolerance {ATOL} + {RTOL}·|y|)"
            )
    return worst


def export_run(
    ckpt_path: str | Path,
    out: str | Path | None = None,
    dynamic_batch: bool = False,
    opset: int = 17,
    check: bool = True,
) -> Path:
    """Export the run ``ckpt_path`` (a run folder or a checkpoint in it) to ONNX; returns the file.

    Args:
        ckpt_path: the run.
        out: the ``.onnx`` file (default ``RUN/model.onnx``).
        dynamic_batch: a symbolic batch dimension (default: batch 1, what a single-image service needs).
        opset: the ONNX opset.
        check: compare onnxruntime with PyTorch on a random batch (``check_parity``).
    """
    from tumorlab.runs.load import load_run

    run = load_run(ckpt_path)
    metadata = run_metadata(run)
    path = Path(out) if out else run.run_dir / "model.onnx"
    if path.suffix != ".onnx":
        raise ConfigError(f"--out {path}: give a file name ending in .onnx")
    export_onnx(run.task, path, metadata, dynamic_batch=dynamic_batch, opset=opset)
    if check:
        check_parity(run.task, path, {**metadata, "outputs": _OUTPUTS[metadata["task"]]})
    return path
