"""How much memory does a run take? Peak RSS of a CNN9 and a U-Net fit, and the decode cache per 1,000 images.

1. Peak resident memory (max RSS) of ``tumorlab fit`` in a child process, read from ``os.wait4`` when it
   exits (the kernel's own count, no sampling): CNN9 at 128 px (``configs/experiments/lgg_cnn9.yaml``) and
   the multi-task U-Net at 64 px (``configs/demo.yaml``), both at batch 32 as in ``overhead.py``, with the
   memory decode cache and ``num_workers: 0`` (loader workers share the cache's pages copy-on-write, so their
   RSS would count those pages once per process). Next to them the interpreter with torch, Lightning and
   tumorlab's CLI imported and nothing run: what any run costs before it holds a tensor.
2. The memory decode cache per 1,000 images at 224 px: ``setup()`` of an ``LGGDataModule`` (image and mask
   per slice) and, with ``--folders-root``, of a ``FolderDataModule`` (image only); the bytes are those of
   the cache's arrays (``nbytes``), divided by the number of images it holds.

Data: the demo phantoms (``data/synth/lgg``, written by ``make demo``) or ``--root`` (an LGG download).

    python benchmarks/memory.py --root data/synth/lgg --out benchmarks/results/memory.json
    python benchmarks/memory.py --quick      # a 3-patient phantom, 32 px, 2 steps: keeps this script working
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, bench_env, markdown_table, tumorlab_cmd, write_json

CACHE_SIZE = 224


def max_rss_mib(cmd: list[str], cwd: Path) -> float:
    """Peak RSS of ``cmd`` (its own waited-for children count with their peak, not added), in MiB."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 returns this child's rusage alone; RUSAGE_CHILDREN would mix in every earlier child
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-1500:]}")
    return usage.ru_maxrss / 1024  # Linux reports KiB


def fit_args(model: str, root: str, work: str, size: int, batch: int, steps: int) -> list[str]:
    config = "experiments/lgg_cnn9.yaml" if model == "cnn9" else "demo.yaml"
    return [
        "fit", "--config", str(REPO / "configs" / config), "--data.root", root,
        "--data.image_size", str(size), "--data.batch_size", str(batch), "--data.num_workers", "0",
        "--data.cache", "memory", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", str(steps), "--trainer.limit_val_batches", "2",
        "--trainer.num_sanity_val_steps", "0", "--run.root", work, "--run.name", f"memory_{model}",
    ]  # fmt: skip


def fits(root: str, quick: bool, steps: int) -> list[dict]:
    """Peak RSS of the bare imports, then of one CNN9 and one U-Net fit."""
    imports = "import torch, lightning.pytorch, tumorlab.cli.lightning"
    rows = [
        {
            "run": "imports only (torch, Lightning, tumorlab CLI)",
            "max_rss_mib": max_rss_mib([sys.executable, "-c", imports], REPO),
        }
    ]
    print(f"{rows[-1]['run']}: {rows[-1]['max_rss_mib']:.0f} MiB", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for model, size in (("cnn9", 128), ("unet", 64)):
            size, batch = (32, 4) if quick else (size, 32)
            args = fit_args(model, root, work, size, batch, steps)
            label = f"{'CNN9' if model == 'cnn9' else 'multi-task U-Net'} fit, {size} px, batch {batch}"
            rows.append(
                {
                    "run": f"{label}, {steps} steps",
                    "args": args,
                    "max_rss_mib": max_rss_mib(tumorlab_cmd(*args), REPO),
                }
            )
            print(f"{rows[-1]['run']}: {rows[-1]['max_rss_mib']:.0f} MiB", flush=True)
    return rows


def cache_bytes(kind: str, root: str) -> dict:
    """Bytes per image of a filled memory cache at ``CACHE_SIZE`` px, from its arrays."""
    if kind == "lgg":
        from tumorlab.data import LGGDataModule

        dm = LGGDataModule(root, image_size=CACHE_SIZE, cache="memory", num_workers=0)
    else:
        from tumorlab.data import FolderDataModule

        dm = FolderDataModule(root, image_size=CACHE_SIZE, cache="memory", num_workers=0)
    dm.setup("fit")
    cache = dm.store.cache
    # the arrays are private to the cache; nbytes is what they hold, whatever the shapes say
    arrays = [a for a in (cache._images, cache._masks) if a is not None]
    total = sum(a.nbytes for a in arrays)
    return {
        "data": f"{type(dm).__name__} ({'image + mask' if cache.has_masks else 'image'})",
        "root": root,
        "images": cache.n,
        "shapes": [list(a.shape) for a in arrays],
        "bytes": total,
        "mib_per_1000_images": total / cache.n * 1000 / 2**20,
    }


def phantom(folder: Path) -> str:
    args = ["synth", "--layout", "lgg", "--out", str(folder), "--patients", "3", "--seed", "0", "--overwrite"]
    subprocess.run(tumorlab_cmd(*args), env=bench_env(), check=True, capture_output=True, cwd=REPO)
    return str(folder)


def tables(runs: list[dict], caches: list[dict]) -> str:
    fit_rows = [[r["run"], f"{r['max_rss_mib']:.0f}"] for r in runs]
    cache_rows = [
        [c["data"], c["images"], f"{c['bytes'] / 2**20:.1f}", f"{c['mib_per_1000_images']:.1f}"] for c in caches
    ]
    return "\n\n".join(
        [
            markdown_table(["run", "max RSS (MiB)"], fit_rows),
            markdown_table(["memory cache at 224 px", "images", "cache MiB", "MiB per 1,000 images"], cache_rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO / "data" / "synth" / "lgg"), help="LGG data (kaggle_3m inside)")
    parser.add_argument("--folders-root", help="also measure the cache of this class-folder data set")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each fit (default 20)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="a 3-patient phantom, 32 px, batch 4, 2 steps")
    ns = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    with tempfile.TemporaryDirectory() as tmp:
        root = phantom(Path(tmp) / "lgg") if ns.quick else ns.root
        steps = 2 if ns.quick else ns.steps
        runs = fits(root, ns.quick, steps)
        caches = [cache_bytes("lgg", root)]
        if ns.folders_root:
            caches.append(cache_bytes("folders", ns.folders_root))
    settings = {"root": "phantom: 3 patients" if ns.quick else ns.root, "steps": steps, "cache_size": CACHE_SIZE}
    write_json(ns.out, "memory", settings, {"fits": runs, "caches": caches})
    print(tables(runs, caches))


if __name__ == "__main__":
    main()
