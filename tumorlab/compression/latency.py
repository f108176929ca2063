"""CPU latency, throughput, parameters, MACs and file size of trained networks, side by side.

Latency is measured the way that gives stable numbers on a shared machine: a fixed thread count (printed with
the table), a few warm-up calls (allocator, oneDNN kernel selection), then ``runs`` timed calls, reported as the
median and the interquartile range (IQR, the spread of the middle half) in milliseconds. ``images/s`` is the
batch size over the median. ``file MB`` is the checkpoint file (a ``fit`` checkpoint also holds the optimiser
state) or the ONNX file; ``weights MB`` the network's ``state_dict`` alone. MACs (multiply-accumulates of one
image) come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2); zeroed weights count like any other,
as a dense kernel computes them.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "LatencyRow",
    "Timing",
    "count_macs",
    "format_latency_table",
    "measure",
    "onnx_runner",
    "threads",
    "time_model",
    "torch_runner",
]


@dataclass
class Timing:
    """Median and IQR of one batch size's timed calls, in milliseconds, and images per second."""

    batch: int
    median_ms: float
    iqr_ms: float
    images_per_s: float


@dataclass
class LatencyRow:
    """One model of the latency table."""

    name: str
    runtime: str
    params: int
    nonzero: int
    macs: int | None
    size_mb: float | None
    weights_mb: float | None = None
    timings: list[Timing] = field(default_factory=list)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch (intra-op) with ``n`` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(fn: Callable[[], Any], batch: int, warmup: int = 5, runs: int = 30) -> Timing:
    """Time ``fn()`` ``runs`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0], 0, times[0])
    median = statistics.median(times)
    return Timing(batch, median, q3 - q1, batch / (median / 1000.0))


def torch_runner(net: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """A call of ``net`` on ``x`` in eval mode without autograd."""
    net.eval()

    def run() -> Any:
        with torch.inference_mode():
            return net(x)

    return run


def onnx_runner(path: str | Path, x: np.ndarray, n_threads: int) -> Callable[[], Any]:
    """A call of an ONNX Runtime CPU session of ``path`` on ``x`` with ``n_threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def count_macs(net: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``x`` (FlopCounterMode's FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() // 2


def weights_megabytes(net: nn.Module) -> float:
    """Size of ``torch.save(net.state_dict())`` in MB: the weights alone, without a checkpoint's optimiser state."""
    import io

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.tell() / 1e6


def parameter_counts(net: nn.Module) -> tuple[int, int]:
    """``(parameters, non-zero parameters)`` of ``net``."""
    params = list(net.parameters())
    return sum(p.numel() for p in params), sum(int((p != 0).sum()) for p in params)


def time_model(
    name: str,
    net: nn.Module,
    shape: tuple[int, int, int],
    batch_sizes: Sequence[int] = (1, 32),
    n_threads: int = 1,
    runs: int = 30,
    size_mb: float | None = None,
    onnx_file: str | Path | None = None,
) -> list[LatencyRow]:
    """The table rows of one network: eager PyTorch, and ONNX Runtime when ``onnx_file`` is given.

    Args:
        name: the row's label.
        net: the network (put in eval mode).
        shape: ``(channels, height, width)`` of one input image.
        batch_sizes: the batch sizes timed.
        n_threads: CPU threads of PyTorch and ONNX Runtime.
        runs: timed calls per batch size (after 5 warm-up calls).
        size_mb: the checkpoint file's size, shown in the table.
        onnx_file: an exported copy of ``net`` to time with ONNX Runtime as a second row.
    """
    net = net.eval()
    params, nonzero = parameter_counts(net)
    with threads(n_threads):
        macs = count_macs(net, torch.zeros(1, *shape))
        rows = [LatencyRow(name, "pytorch", params, nonzero, macs, size_mb, weights_megabytes(net))]
        for b in batch_sizes:
            x = torch.randn(b, *shape)
            rows[0].timings.append(measure(torch_runner(net, x), b, runs=runs))
        if onnx_file is not None:
            size = Path(onnx_file).stat().st_size / 1e6
            rows.append(LatencyRow(name, "onnxruntime", params, nonzero, macs, size, size))
            for b in batch_sizes:
                x = np.random.default_rng(0).standard_normal((b, *shape), dtype=np.float32)
                rows[1].timings.append(measure(onnx_runner(onnx_file, x, n_threads), b, runs=runs))
    return rows


def format_latency_table(rows: Sequence[LatencyRow], n_threads: int, reference: str | None = None) -> str:
    """A Markdown table of ``rows``; speed-up at batch 1 against the first row (or the row named ``reference``)."""
    if not rows:
        return ""
    base = next((r for r in rows if r.name == reference), rows[0])
    batches = [t.batch for t in base.timings]
    head = ["model", "runtime", "params", "non-zero", "MMACs", "file MB", "weights MB"]
    for b in batches:
        head += [f"b{b} median ms", f"b{b} IQR ms", f"b{b} img/s"]
    head.append("b1 speed-up" if batches and batches[0] == 1 else f"b{batches[0]} speed-up")
    lines = [f"CPU, {n_threads} thread(s), torch {torch.__version__}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for r in rows:
        cells = [r.name, r.runtime, f"{r.params:,}", f"{r.nonzero:,}"]
        cells += [f"{r.macs / 1e6:.1f}" if r.macs is not None else "", f"{r.size_mb:.2f}" if r.size_mb else ""]
        cells.append(f"{r.weights_mb:.2f}" if r.weights_mb else "")
        for t in r.timings:
            cells += [f"{t.median_ms:.2f}", f"{t.iqr_ms:.2f}", f"{t.images_per_s:.0f}"]
        speedup = base.timings[0].median_ms / r.timings[0].median_ms if r.timings and base.timings else float("nan")
        cells.append(f"{speedup:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label(run) -> str:
    """A short row name: the pruning method and sparsity of a pruned model, else the run's folder name."""
    import json

    record = json.loads((run.run_dir / "run.json").read_text()) if (run.run_dir / "run.json").is_file() else {}
    if record.get("command") == "prune" and record.get("method"):
        return f"{type(run.task.net).__name__} {record['method']} {float(record['sparsity']):.0%}"
    return f"{type(run.task.net).__name__} {run.run_dir.parent.name}/{run.run_dir.name}"


def bench_latency(
    ckpt_paths: Sequence[str | Path],
    batch_sizes: Sequence[int] = (1, 32),
    n_threads: int = 1,
    runs: int = 30,
    onnx: bool = False,
) -> str:
    """``tumorlab bench latency``: the Markdown table of every run in ``ckpt_paths`` (the first is the reference).

    Args:
        ckpt_paths: run folders or checkpoints (dense runs, pruned models written by ``tumorlab prune``).
        batch_sizes: batch sizes timed.
        n_threads: CPU threads of PyTorch and ONNX Runtime.
        runs: timed calls per batch size.
        onnx: also export each model (dynamic batch, to a temporary file) and time it with ONNX Runtime.
    """
    import tempfile

    from tumorlab.compression.export import export_onnx, run_metadata
    from tumorlab.errors import ConfigError
    from tumorlab.runs.load import load_run

    if n_threads < 1 or runs < 2 or not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError("bench latency needs --threads >= 1, --runs >= 2 and batch sizes >= 1")
    rows: list[LatencyRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, ckpt in enumerate(ckpt_paths):
            run = load_run(ckpt)
            dm = run.datamodule
            shape = (int(dm.in_channels), int(dm.image_size), int(dm.image_size))
            onnx_file = None
            if onnx:
                onnx_file = export_onnx(run.task, Path(tmp) / f"m{k}.onnx", run_metadata(run), dynamic_batch=True)
            size = run.checkpoint.stat().st_size / 1e6
            rows += time_model(_label(run), run.task.net, shape, batch_sizes, n_threads, runs, size, onnx_file)
    return format_latency_table(rows, n_threads)
