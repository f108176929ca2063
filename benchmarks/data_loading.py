"""Does data loading bound training? Loader images/s with and without the decode cache, next to a CNN's speed.

Measures, on a class-folder data set (default: the real 4-class ``Training/`` folder) at 224 px:

- setup: the one pass that hashes, decodes, resizes and caches every file (with exact and with near-duplicate
  grouping, the latter adding a perceptual hash per image);
- a training epoch without the cache (every image decoded in the loader: what each epoch costs without it);
- a training epoch from the memory cache; both with 0 and 2 loader workers;

and the training throughput (forward + backward + Adam step) of a 9-layer CNN at 128 px, batch 32, on the CPU.
tumorlab's CNN9 arrives with the models package; the network here is a stand-in of the same shape (9 conv
layers with BatchNorm and ReLU, 4 max-pools, global average pooling, a linear head).

    python benchmarks/data_loading.py --root ../shared/data/brain-tumor-classification/Training \\
        --doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from tumorlab.data import FolderDataModule

SECTION = "## Data loading: decode cache vs. model throughput (CPU)"


def cnn9(num_classes: int = 4) -> nn.Sequential:
    """9 conv layers (3x3, BatchNorm, ReLU), max-pool after layers 2, 4, 6 and 8, global pooling, linear."""
    widths = [32, 32, 64, 64, 128, 128, 256, 256, 256]
    layers: list[nn.Module] = []
    c_in = 3
    for i, c in enumerate(widths):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if i in (1, 3, 5, 7):
            layers.append(nn.MaxPool2d(2))
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def model_throughput(steps: int, batch: int = 32, size: int = 128) -> float:
    """Training images/s of ``cnn9`` (after two warm-up steps)."""
    torch.manual_seed(0)
    model = cnn9()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 4, (batch,))
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def epoch_rate(loader) -> tuple[float, float]:
    """(images/s, seconds) of one pass over ``loader``."""
    start = time.perf_counter()
    n = sum(len(batch["label"]) for batch in loader)
    elapsed = time.perf_counter() - start
    return n / elapsed, elapsed


def datamodule(root: str, cache: str, workers: int, duplicates: str = "exact") -> tuple[FolderDataModule, float]:
    start = time.perf_counter()
    dm = FolderDataModule(root, image_size=224, batch_size=32, num_workers=workers, cache=cache, duplicates=duplicates)
    dm.setup("fit")
    return dm, time.perf_counter() - start


def run(root: str, model_steps: int) -> list[tuple[str, str, str]]:
    rows = []
    for duplicates in ("exact", "near"):
        dm, seconds = datamodule(root, "memory", 0, duplicates)
        n = len(dm.samples)
        rows.append(
            (f"setup: hash + decode + resize + cache ({duplicates} duplicates)", f"{n / seconds:.0f}", f"{seconds:.1f}")
        )
        print(rows[-1], flush=True)
    n_train = len(dm.datasets["train"])
    for workers in (0, 2):
        dm, _ = datamodule(root, "none", workers)
        rate, seconds = epoch_rate(dm.train_dataloader())
        rows.append(
            (f"train epoch, no cache (decodes every image), {workers} workers", f"{rate:.0f}", f"{seconds:.1f}")
        )
        print(rows[-1], flush=True)
    for workers in (0, 2):
        dm, _ = datamodule(root, "memory", workers)
        loader = dm.train_dataloader()
        for epoch in (1, 2):
            rate, seconds = epoch_rate(loader)
            rows.append(
                (f"train epoch {epoch} from the memory cache, {workers} workers", f"{rate:.0f}", f"{seconds:.1f}")
            )
            print(rows[-1], flush=True)
    rate = model_throughput(model_steps)
    rows.append(("9-layer CNN training (fwd + bwd + Adam), 128 px, batch 32", f"{rate:.1f}", "-"))
    print(rows[-1], flush=True)
    rows.insert(0, ("(sizes)", f"{n_train} images", str(len(dm.samples))))
    return rows


def markdown(rows: list[tuple[str, str, str]], command: str) -> str:
    cached = min(float(r[1]) for r in rows if "memory cache" in r[0] and "epoch 2" in r[0])
    model = float(rows[-1][1])
    lines = [
        SECTION,
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}. Setup rows time "
        f"`setup()` of a fresh `FolderDataModule` over all {rows[0][2]} files (one thread pool in the main "
        f"process); epoch rows one pass over the {rows[0][1]} of the training split, 224 px, batch 32, default "
        "augmentation (horizontal flip), float tensors normalised as the model gets them. The CNN is a stand-in "
        "for CNN9 (9 conv layers with BatchNorm, 4 max-pools; the models package brings the real one). "
        "The machine is shared with other work, so repeated runs differ by up to about 30 %.",
        "",
        "| what | images/s | seconds |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows[1:]),
        "",
        f"The slowest cached epoch delivers {cached:.0f} images/s, {cached / model:.0f}x what the CNN trains on "
        f"({model:.1f} images/s): data loading does not bound training once the cache is filled. Without the "
        "cache every epoch decodes every JPEG again, at the rate of the `no cache` rows.",
    ]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, text: str) -> None:
    """Replace this benchmark's section of ``doc`` (or append it), keeping every other section."""
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        tail = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        new = head + text + tail.lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    doc.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="class-folder data set (e.g. the 4-class Training/ folder)")
    parser.add_argument("--model-steps", type=int, default=10, help="timed training steps of the CNN")
    parser.add_argument("--doc", type=Path, help="markdown file whose data-loading section is (re)written")
    args = parser.parse_args()
    rows = run(args.root, args.model_steps)
    text = markdown(rows, "python " + " ".join(sys.argv))
    print(text)
    if args.doc:
        write_section(args.doc, text)


if __name__ == "__main__":
    main()
