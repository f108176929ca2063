"""What does tumorlab cost over a plain PyTorch loop? Training throughput, the same model and data, interleaved.

For each round, the same network (CNN9 at 128 px, or the multi-task U-Net at 64 px), on the same in-memory
batches, trains for the same number of optimiser steps twice:

- ``tumorlab``: ``tumorlab fit`` in this process, as the command configures it (ClassificationTask /
  MultiTaskTask with their metrics, the default callbacks, the W&B logger offline, a run folder);
- ``plain``: a loop written here: forward, the same loss (cross-entropy; for the U-Net the same joint
  Dice + BCE and cross-entropy loss, weight 0.5), backward, Adam step.

Only training steps after a warm-up are timed (a callback marks them in the tumorlab run), so start-up,
validation and checkpoint writing are not counted. The ratio tumorlab/plain of images/s per round is reported
as median and spread (min-max and the interquartile range) over the rounds, with a verdict on the target
(ratio >= 0.98): met or missed only when the whole interquartile range lies on one side of it.

Sizing of the defaults: 6 rounds (an even number, so each side goes first equally often) of 150 timed steps.
At 22 img/s (CNN9, 128 px, batch 32 on 2 idle cores) one side of a round is about 3.6 min, long enough that
a load spike of a few seconds moves its throughput by about 1 %; 40-step runs (58 s) moved by up to 8 %
between rounds on a shared machine. The full CNN9 benchmark takes about 45 min, the U-Net one about 25 min.

    python benchmarks/overhead.py --model cnn9 --out benchmarks/results/overhead_cnn9.json
    python benchmarks/overhead.py --model unet --out benchmarks/results/overhead_unet.json
    python benchmarks/overhead.py --model unet --rounds 0 --steps 60 --breakdown   # where a step's time goes
    python benchmarks/overhead.py --quick          # a few steps at 32 px: the test that keeps this script working
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule
from torch.utils.data import DataLoader, Dataset

from _common import spread, write_json

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Framework overhead: tumorlab fit vs. a plain PyTorch loop (CPU)"
_TIMES: dict[str, float] = {}


class _Batches(Dataset):
    """``n`` samples drawn from a pool of at most ``pool`` random images, masks and labels.

    The pool bounds the memory (150 steps of batch 32 at 128 px would be 1 GB of distinct float images);
    what the images hold does not change the speed of a step.
    """

    def __init__(self, n: int, size: int, seed: int = 0, pool: int = 256) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n, m = n, min(n, pool)
        self.images = torch.randn(m, 3, size, size, generator=g)
        self.masks = (torch.rand(m, 1, size, size, generator=g) > 0.9).float()
        self.labels = self.masks.flatten(1).amax(1).long()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        j = i % len(self.labels)
        return {
            "image": self.images[j],
            "mask": self.masks[j],
            "label": self.labels[j],
            "patient": f"P{i % 8}",
            "image_path": f"img{i}.png",
        }


class MemoryData(LightningDataModule):
    """In-memory batches in tumorlab's batch format (image, mask, label, patient, image_path)."""

    def __init__(self, n: int = 64, size: int = 128, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.image_size = 2, 3, size
        self.class_names = ["no_tumour", "tumour"]
        self.batch_size = batch_size
        self.data = _Batches(n, size, seed)

    def train_dataloader(self) -> DataLoader:
        return loader(self.data, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return loader(self.data, self.batch_size)


def loader(data: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


class StepTimer(Callback):
    """Time training steps ``warmup`` .. the last one (wall clock), for the tumorlab side."""

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            _TIMES["start"] = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _TIMES["end"] = time.perf_counter()
        _TIMES["steps"] = trainer.global_step - self.warmup


def tumorlab_run(model: str, size: int, batch: int, warmup: int, steps: int, root: str) -> float:
    """Images/s of the timed steps of ``tumorlab fit``."""
    from tumorlab.cli.main import main

    n = batch * (warmup + steps)  # one epoch holds every step: no validation inside the timed window
    net = (
        ["--model", "CNN9"]
        if model == "cnn9"
        else [
            "--model",
            "UNetWithClassifier",
            "--model.net.init_args.encoder_depth",
            "4",
            "--model.net.init_args.decoder_channels",
            "[64, 32, 16, 8]",
            "--model.monitor",
            "val/dice",
        ]
    )
    args = ["fit", *net, "--data", "__main__.MemoryData", f"--data.n={n}", f"--data.size={size}"]
    args += [f"--data.batch_size={batch}", f"--trainer.max_steps={warmup + steps}", "--trainer.accelerator=cpu"]
    # one validation batch after the timed steps ("1" would parse as the fraction 1.0, every batch)
    args += [f"--trainer.limit_val_batches={1.5 / (warmup + steps)}", "--trainer.num_sanity_val_steps=0"]
    args += ["--run.root", root]
    args += ["--trainer.callbacks+=__main__.StepTimer", f"--trainer.callbacks.warmup={warmup}"]
    _TIMES.clear()
    if main(args) != 0:
        raise SystemExit("tumorlab fit failed")
    return _TIMES["steps"] * batch / (_TIMES["end"] - _TIMES["start"])


def plain_run(model: str, size: int, batch: int, warmup: int, steps: int) -> float:
    """Images/s of the same steps in a loop written by hand."""
    from tumorlab.models import CNN9, UNetWithClassifier
    from tumorlab.tasks.losses import dice_bce_loss, joint_loss

    torch.manual_seed(0)
    if model == "cnn9":
        net = CNN9(num_classes=2)
    else:
        net = UNetWithClassifier(encoder_depth=4, decoder_channels=(64, 32, 16, 8))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    batches = iter(loader(_Batches(batch * (warmup + steps), size), batch))
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        b = next(batches)
        out = net(b["image"])
        if model == "cnn9":
            loss = F.cross_entropy(out, b["label"])
        else:
            loss = joint_loss(
                dice_bce_loss(out.mask_logits, b["mask"]), F.cross_entropy(out.class_logits, b["label"]), 0.5
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


TARGET = 0.98

# What a tumorlab training step does beyond the plain loop's forward, loss, backward and Adam step: the task's
# metric updates and logging calls, and the callbacks' per-batch hooks.
_TIMED = {
    "task": ("_update_class_metrics", "_update_seg_metrics", "losses", "log", "log_dict"),
    "callbacks": ("on_train_batch_start", "on_train_batch_end", "on_before_optimizer_step", "on_after_backward"),
}


def _timed(owner: type, name: str, label: str, totals: dict, patched: list) -> None:
    """Wrap ``owner.name`` so that its wall time adds up in ``totals[label]``; ``patched`` records how to undo it."""
    original = getattr(owner, name)
    patched.append((owner, name, original if name in owner.__dict__ else None))

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def breakdown(ns: argparse.Namespace, size: int) -> dict[str, float]:
    """Milliseconds per training step of one instrumented ``tumorlab fit``: forward, backward, the optimiser,
    and each piece of tumorlab's own per-step work. The numbers are inclusive (``log_dict`` calls ``log``, the
    optimiser step runs the closure: forward and backward) and count the warm-up steps too."""
    from tumorlab import callbacks
    from tumorlab.tasks import ClassificationTask, MultiTaskTask

    task = ClassificationTask if ns.model == "cnn9" else MultiTaskTask
    totals: dict[str, float] = {}
    patched: list = []
    for name in ("forward", *_TIMED["task"]):
        if hasattr(task, name):
            _timed(task, name, f"task.{name}", totals, patched)
    _timed(torch.Tensor, "backward", "backward", totals, patched)
    _timed(torch.optim.Adam, "step", "Adam.step (runs the closure)", totals, patched)
    for name in _TIMED["callbacks"]:
        if name in callbacks.FiniteGuard.__dict__:
            _timed(callbacks.FiniteGuard, name, f"FiniteGuard.{name}", totals, patched)
    try:
        with tempfile.TemporaryDirectory() as root:
            speed = tumorlab_run(ns.model, size, ns.batch, ns.warmup, ns.steps, root)
    finally:
        for owner, name, original in reversed(patched):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
    steps = ns.warmup + ns.steps
    per_step = {k: v / steps * 1000 for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    per_step["step (timed window)"] = ns.batch / speed * 1000
    return per_step


def verdict(q1: float, q3: float, rounds: int, target: float = TARGET) -> str:
    """``met`` / ``missed`` when the interquartile range of 4 or more rounds lies above / below ``target``."""
    if rounds < 4:
        return f"target >= {target}: not decided ({rounds} round(s): too few for a spread)"
    if q1 >= target:
        return f"target >= {target}: met (IQR {q1:.3f}-{q3:.3f} above it)"
    if q3 < target:
        return f"target >= {target}: missed (IQR {q1:.3f}-{q3:.3f} below it)"
    return f"target >= {target}: not decided (IQR {q1:.3f}-{q3:.3f} contains it: more rounds or a quieter machine)"


def measure(ns: argparse.Namespace, size: int) -> list[dict]:
    """One dict per round: images/s of each side and the order they ran in."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for r in range(ns.rounds):
            # alternate which side goes first, so a drift of the machine's speed does not favour one
            order = ("plain", "tumorlab") if r % 2 == 0 else ("tumorlab", "plain")
            speed: dict = {"first": order[0]}
            for side in order:
                if side == "plain":
                    speed[side] = plain_run(ns.model, size, ns.batch, ns.warmup, ns.steps)
                else:
                    speed[side] = tumorlab_run(ns.model, size, ns.batch, ns.warmup, ns.steps, root)
            speed["ratio"] = speed["tumorlab"] / speed["plain"]
            rows.append(speed)
            print(
                f"round {r + 1}: plain {speed['plain']:.1f} img/s, tumorlab {speed['tumorlab']:.1f} img/s, "
                f"ratio {speed['ratio']:.3f}",
                flush=True,
            )
    return rows


def _ratio_table(ns: argparse.Namespace, size: int, rows: list[dict]) -> tuple[list[str], dict]:
    """The Markdown lines of the interleaved rounds and their summary for the JSON file."""
    ratios = [r["ratio"] for r in rows]
    ratio = spread(ratios)
    name = "CNN9" if ns.model == "cnn9" else "U-Net (ResNet-18 encoder, depth 4) multi-task"
    table = [
        f"{name}, {size} px, batch {ns.batch}, {ns.steps} timed steps after {ns.warmup} warm-up, {ns.rounds} "
        f"interleaved rounds; machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {verdict(ratio['q1'], ratio['q3'], ns.rounds)}.",
        "",
        "| plain img/s (median) | tumorlab img/s (median) | ratio median | ratio min-max | ratio IQR |",
        "|---|---|---|---|---|",
        f"| {statistics.median(r['plain'] for r in rows):.1f} | {statistics.median(r['tumorlab'] for r in rows):.1f} "
        f"| {ratio['median']:.3f} | {ratio['min']:.3f}-{ratio['max']:.3f} | {ratio['q1']:.3f}-{ratio['q3']:.3f} |",
    ]
    return table, {"ratio": ratio, "verdict": verdict(ratio["q1"], ratio["q3"], ns.rounds), "rounds": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("cnn9", "unet"), default="cnn9")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6; 0 with --breakdown)")
    parser.add_argument("--steps", type=int, default=150, help="timed optimiser steps per run (default 150)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, help="image side (default: 128 for cnn9, 64 for unet)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 steps at 32 px, batch 4")
    parser.add_argument("--out", help="write the per-round results and the summary as JSON to this file")
    parser.add_argument("--doc", help="append the result table to this Markdown file under its section")
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also run one instrumented tumorlab fit and print milliseconds per step of forward, backward, the "
        "optimiser and each piece of tumorlab's per-step work (metric updates, logging, callback hooks)",
    )  # fmt: skip
    ns = parser.parse_args()
    if ns.quick:
        ns.rounds, ns.steps, ns.warmup, ns.batch, ns.size = 1, 2, 1, 4, 32
    size = ns.size or (128 if ns.model == "cnn9" else 64)
    os.environ.setdefault("WANDB_MODE", "offline")
    rows = measure(ns, size)
    settings = {"model": ns.model, "size": size, "batch": ns.batch, "steps": ns.steps, "warmup": ns.warmup}
    settings["rounds"] = ns.rounds
    table, summary = _ratio_table(ns, size, rows) if rows else ([], {})
    if ns.breakdown:
        summary["breakdown_ms_per_step"] = parts = breakdown(ns, size)
        lines = ["| per training step | ms |", "|---|---|", *(f"| {k} | {v:.2f} |" for k, v in parts.items())]
        table = lines + (["", *table] if table else [])
    write_json(ns.out, f"overhead_{ns.model}", settings, summary)
    print("\n".join(table))
    if ns.doc:
        command = "python benchmarks/overhead.py " + " ".join(sys.argv[1:])
        doc = Path(ns.doc)
        text = doc.read_text() if doc.exists() else ""
        block = f"\n```bash\n{command}\n```\n\n" + "\n".join(table) + "\n"
        if SECTION not in text:
            text = text.rstrip("\n") + f"\n\n{SECTION}\n"
        doc.write_text(text.rstrip("\n") + "\n" + block)


if __name__ == "__main__":
    main()
