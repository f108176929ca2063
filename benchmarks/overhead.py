"""What does tumorlab cost over a plain PyTorch loop? Training throughput, the same model and data, interleaved.

For each round, the same network (CNN9 at 128 px, or the multi-task U-Net at 64 px), on the same in-memory
batches, trains for the same number of optimiser steps twice:

- ``tumorlab``: ``tumorlab fit`` in this process, as the command configures it (ClassificationTask /
  MultiTaskTask with their metrics, the default callbacks, the W&B logger offline, a run folder);
- ``plain``: a loop written here: forward, the same loss, backward, Adam step.

Only training steps after a warm-up are timed (a callback marks them in the tumorlab run), so start-up,
validation and checkpoint writing are not counted. The ratio tumorlab/plain of images/s per round is reported
as median and spread (min-max and the interquartile range) over the rounds.

    python benchmarks/overhead.py --model cnn9 --rounds 5 --steps 40 --doc docs/benchmarks.md
    python benchmarks/overhead.py --model unet --rounds 5 --steps 40 --doc docs/benchmarks.md
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

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Framework overhead: tumorlab fit vs. a plain PyTorch loop (CPU)"
_TIMES: dict[str, float] = {}


class _Batches(Dataset):
    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.masks = (torch.rand(n, 1, size, size, generator=g) > 0.9).float()
        self.labels = self.masks.flatten(1).amax(1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "mask": self.masks[i],
            "label": self.labels[i],
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
    from tumorlab.cli import main

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
    args += ["--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--run.root", root]
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


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("cnn9", "unet"), default="cnn9")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="timed optimiser steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, help="image side (default: 128 for cnn9, 64 for unet)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 steps at 32 px, batch 4")
    parser.add_argument("--doc", help="append the result table to this Markdown file under its section")
    ns = parser.parse_args()
    if ns.quick:
        ns.rounds, ns.steps, ns.warmup, ns.batch, ns.size = 1, 2, 1, 4, 32
    size = ns.size or (128 if ns.model == "cnn9" else 64)
    os.environ.setdefault("WANDB_MODE", "offline")
    ratios, rows = [], []
    with tempfile.TemporaryDirectory() as root:
        for r in range(ns.rounds):
            # alternate which side goes first, so a drift of the machine's speed does not favour one
            order = ("plain", "tumorlab") if r % 2 == 0 else ("tumorlab", "plain")
            speed = {}
            for side in order:
                if side == "plain":
                    speed[side] = plain_run(ns.model, size, ns.batch, ns.warmup, ns.steps)
                else:
                    speed[side] = tumorlab_run(ns.model, size, ns.batch, ns.warmup, ns.steps, root)
            ratios.append(speed["tumorlab"] / speed["plain"])
            rows.append(speed)
            print(
                f"round {r + 1}: plain {speed['plain']:.1f} img/s, tumorlab {speed['tumorlab']:.1f} img/s, "
                f"ratio {ratios[-1]:.3f}",
                flush=True,
            )
    q1, q3 = quartiles(ratios)
    name = "CNN9" if ns.model == "cnn9" else "U-Net (ResNet-18 encoder, depth 4) multi-task"
    table = [
        f"{name}, {size} px, batch {ns.batch}, {ns.steps} timed steps after {ns.warmup} warm-up, {ns.rounds} "
        f"interleaved rounds; machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| plain img/s (median) | tumorlab img/s (median) | ratio median | ratio min-max | ratio IQR |",
        "|---|---|---|---|---|",
        f"| {statistics.median(r['plain'] for r in rows):.1f} | {statistics.median(r['tumorlab'] for r in rows):.1f} "
        f"| {statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} | {q1:.3f}-{q3:.3f} |",
    ]
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
