"""Does data loading bound training? Loader images/s with and without the decode cache, next to CNN9's speed.

Measures, at 224 px, on a class-folder data set of JPEGs (``--root``: the real 4-class ``Training/`` folder)
and on the LGG TIFF slices with their masks (``--lgg-root``: the LGG download, ``kaggle_3m`` inside, read
by ``LGGDataModule`` for the multi-task batches: image, mask and label), each where given:

- setup: the one pass that hashes, decodes, resizes and caches every file (with exact and with near-duplicate
  grouping, the latter adding a perceptual hash per image);
- a training epoch without the cache (every image decoded in the loader: what each epoch costs without it);
- a training epoch from the memory cache; both with 0 and 2 loader workers;

and the training throughput (forward + backward + Adam step) of ``tumorlab.models.CNN9`` at 128 px,
batch 32, on the CPU: the model whose speed the loaders have to keep up with.

    python benchmarks/data_loading.py --root ../shared/data/brain-tumor-classification/Training \\
        --lgg-root ../shared/data/lgg-mri-segmentation --out benchmarks/results/data_loading.json
    python benchmarks/data_loading.py --quick   # small phantoms, 0 workers: keeps this script working
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import bench_env, tumorlab_cmd, write_json
from tumorlab.data import FolderDataModule, LGGDataModule
from tumorlab.models import CNN9

SECTION = "## Data loading: decode cache vs. model throughput (CPU)"


def model_throughput(steps: int, batch: int = 32, size: int = 128) -> float:
    """Training images/s of CNN9 (4 classes, after two warm-up steps)."""
    torch.manual_seed(0)
    model = CNN9(num_classes=4)
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


def datamodule(kind: str, root: str, cache: str, workers: int, duplicates: str = "exact") -> tuple[object, float]:
    """A ``FolderDataModule`` (``folders``) or multi-task ``LGGDataModule`` (``lgg``) after ``setup``; seconds."""
    start = time.perf_counter()
    common = {"image_size": 224, "batch_size": 32, "num_workers": workers, "cache": cache, "duplicates": duplicates}
    dm = FolderDataModule(root, **common) if kind == "folders" else LGGDataModule(root, task="multitask", **common)
    dm.setup("fit")
    return dm, time.perf_counter() - start


def run(kind: str, root: str, workers: tuple[int, ...] = (0, 2)) -> list[tuple[str, str, str]]:
    """Rows (what, images/s, seconds) of the loader measurements; the first row holds the sizes."""
    name = "JPEG folders" if kind == "folders" else "LGG TIFF + mask"
    rows = []
    for duplicates in ("exact", "near"):
        dm, seconds = datamodule(kind, root, "memory", 0, duplicates)
        n = len(dm.samples)
        what = f"{name}: setup: hash + decode + resize + cache ({duplicates} duplicates)"
        rows.append((what, f"{n / seconds:.0f}", f"{seconds:.1f}"))
        print(rows[-1], flush=True)
    n_train = len(dm.datasets["train"])
    for w in workers:
        dm, _ = datamodule(kind, root, "none", w)
        rate, seconds = epoch_rate(dm.train_dataloader())
        rows.append(
            (f"{name}: train epoch, no cache (decodes every image), {w} workers", f"{rate:.0f}", f"{seconds:.1f}")
        )
        print(rows[-1], flush=True)
    for w in workers:
        dm, _ = datamodule(kind, root, "memory", w)
        loader = dm.train_dataloader()
        for epoch in (1, 2):
            rate, seconds = epoch_rate(loader)
            rows.append(
                (f"{name}: train epoch {epoch} from the memory cache, {w} workers", f"{rate:.0f}", f"{seconds:.1f}")
            )
            print(rows[-1], flush=True)
    rows.insert(0, (f"{name} (sizes)", f"{n_train} images", str(len(dm.samples))))
    return rows


def markdown(
    groups: dict[str, list[tuple[str, str, str]]], model: float, model_size: tuple[int, int], command: str
) -> str:
    """The section for docs/benchmarks.md: the command, the machine, one table for every data set measured."""
    lines = [
        SECTION,
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}. Setup rows time "
        "`setup()` of a fresh data module over all files (one thread pool in the main process); epoch rows one "
        "pass over the training split, 224 px, batch 32, default augmentation (horizontal flip), float tensors "
        "normalised as the model gets them (LGG: multi-task batches, image + mask + label).",
    ]
    for rows in groups.values():
        cached = min(float(r[1]) for r in rows if "memory cache" in r[0] and "epoch 2" in r[0])
        lines += [
            "",
            f"{rows[0][0]}: {rows[0][2]} files, {rows[0][1]} in the training split.",
            "",
            "| what | images/s | seconds |",
            "|---|---|---|",
            *(f"| {a} | {b} | {c} |" for a, b, c in rows[1:]),
            "",
            f"The slowest cached epoch delivers {cached:.0f} images/s, {cached / model:.0f}x what CNN9 trains on.",
        ]
    size, batch = model_size
    lines += ["", f"CNN9 training (fwd + bwd + Adam), {size} px, batch {batch}: {model:.1f} images/s."]
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


def as_json(rows: list[tuple[str, str, str]]) -> dict:
    """The rows of one data set as JSON: its file and training-split counts, then the measured rows as numbers."""
    sizes, *measured = rows
    return {
        "files": int(sizes[2]),
        "train_images": int(sizes[1].split()[0]),
        "rows": [
            {"what": what, "images_per_s": float(rate), "seconds": float(seconds)} for what, rate, seconds in measured
        ],
    }


def phantoms(folder: Path) -> tuple[str, str]:
    """Small phantom sets for ``--quick``: 4 x 6 class-folder JPEGs and 3 LGG patients (68 TIFF slices)."""
    runs = [
        ["--layout", "folders", "--out", str(folder / "folders"), "--train-per-class", "6", "--test-per-class", "2"],
        ["--layout", "lgg", "--out", str(folder / "lgg"), "--patients", "3"],
    ]
    for args in runs:
        subprocess.run(tumorlab_cmd("synth", *args, "--seed", "0"), env=bench_env(), check=True, capture_output=True)
    return str(folder / "folders" / "Training"), str(folder / "lgg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="class-folder data set (e.g. the 4-class Training/ folder)")
    parser.add_argument("--lgg-root", help="the LGG download (kaggle_3m inside): TIFF slices with masks")
    parser.add_argument("--model-steps", type=int, default=10, help="timed training steps of CNN9")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--doc", type=Path, help="markdown file whose data-loading section is (re)written")
    parser.add_argument("--quick", action="store_true", help="small phantoms, 0 workers, 1 CNN9 step at 32 px")
    args = parser.parse_args()
    if not (args.quick or args.root or args.lgg_root):
        parser.error("give --root, --lgg-root or both (or --quick)")
    with tempfile.TemporaryDirectory() as tmp:
        roots = dict(zip(("folders", "lgg"), phantoms(Path(tmp)), strict=True))
        if not args.quick:
            roots = {k: v for k, v in (("folders", args.root), ("lgg", args.lgg_root)) if v}
        workers = (0,) if args.quick else (0, 2)
        groups = {kind: run(kind, root, workers) for kind, root in roots.items()}
    steps, batch, size = (1, 4, 32) if args.quick else (args.model_steps, 32, 128)
    model = model_throughput(steps, batch, size)
    text = markdown(groups, model, (size, batch), "python " + " ".join(sys.argv))
    results: dict = {kind: as_json(rows) for kind, rows in groups.items()}
    results["cnn9_train"] = {"images_per_s": model, "size": size, "batch": batch, "steps": steps}
    write_json(
        args.out, "data_loading", {"roots": roots if not args.quick else "phantoms", "workers": workers}, results
    )
    print(text)
    if args.doc:
        write_section(args.doc, text)


if __name__ == "__main__":
    main()
