"""Does ImageNet initialisation help on 4-class brain MRI, and how much of the backbone should train?

Every run is a ``tumorlab fit`` of the same protocol on the 4-class ``Training/`` folder (tumorlab's split,
stratified and grouped by exact and near-duplicate images; the test split is drawn from it), with the same
epochs, image size, batch size, training batches per epoch, optimiser (Adam, lr 1e-3) and seed:

- ``init``: EfficientNet-Lite0 from ImageNet weights (``tumorlab weights import efficientnet-lite0``) vs the
  same network from random initialisation vs SmallCNN, all trained end to end;
- ``split``: Lite0 from ImageNet on a random split that ignores duplicates (``--data.duplicates none``), as the
  published 4-class study split its images, beside the grouped split of the ``init`` run;
- ``freezing``: Lite0 from ImageNet with the backbone frozen (``trainable_blocks: 0``), the last 3 of timm's 17
  groups training, everything training (the ``init`` run), and gradual unfreezing (head for 1 epoch, then the
  whole backbone at a tenth of the learning rate).

Each run is tested on its best validation checkpoint (``--run.test_after_fit``); the JSON keeps the test
metrics, the per-class recall, the train time and each command's wall time.

    python benchmarks/transfer.py --root $TUMORLAB_REAL_DATA/brain-tumor-classification \
        --out benchmarks/results/transfer.json
    python benchmarks/transfer.py --quick --root PHANTOM --out FILE      # 2 batches at 32 px (the test)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

from _common import REPO, bench_env, markdown_table, tumorlab_cmd, write_json

LITE0 = "configs/experiments/mri4_lite0_transfer.yaml"
NO_CALLBACKS = ["--trainer.callbacks=[]"]  # the config's GradualUnfreezing off: plain end-to-end training
RANDOM = ["--model.net.init_args.weights_file=null", "--model.net.init_args.pretrained=false"]
RUNS = {
    "lite0_imagenet_full": ("init", LITE0, NO_CALLBACKS),
    "lite0_random_full": ("init", LITE0, [*NO_CALLBACKS, *RANDOM]),
    "smallcnn": ("init", "configs/experiments/mri4_smallcnn.yaml", []),
    "lite0_imagenet_frozen": ("freezing", LITE0, [*NO_CALLBACKS, "--model.net.init_args.trainable_blocks=0"]),
    "lite0_imagenet_last3": ("freezing", LITE0, [*NO_CALLBACKS, "--model.net.init_args.trainable_blocks=3"]),
    "lite0_imagenet_gradual": ("freezing", LITE0, ["--trainer.callbacks.init_args.head_epochs=1"]),
    # the published 4-class study's split: images drawn at random, duplicates ignored (the same 70/15/15 fractions)
    "lite0_imagenet_full_randomsplit": ("split", LITE0, [*NO_CALLBACKS, "--data.duplicates", "none"]),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the 4-class download (holds Training/)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_transfer", help="run folders")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--train-batches", type=int, default=12, help="training batches per epoch (0: every batch, whole epochs)"
    )
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--quick", action="store_true", help="2 batches at 32 px, 1 epoch (the test)")
    return parser.parse_args()


def _fit(name: str, config: str, extra: list[str], ns: argparse.Namespace) -> dict:
    args = ["fit", "--config", config, *extra, "--data.root", str(ns.root), "--data.image_size", str(ns.image_size),
            "--data.batch_size", str(ns.batch_size), "--data.cache", "disk", "--data.cache_dir", str(ns.work / "cache"),
            "--trainer.max_epochs", str(ns.epochs), "--trainer.limit_train_batches", str(ns.train_batches or 1.0),
            "--trainer.logger", "false", "--seed_everything", "42", "--run.root", str(ns.work), "--run.name", name,
            "--run.test_after_fit", "true", "--run.report", "false"]  # fmt: skip
    if ns.quick:
        args += ["--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--data.num_workers", "0"]
    log = ns.work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = bench_env(TUMORLAB_WEIGHTS_DIR=str(ns.work / "weights"))
    with log.open("w") as fh:
        code = subprocess.run(tumorlab_cmd(*args), cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if code.returncode != 0:
        raise SystemExit(f"{name} failed (exit {code.returncode}); see {log}")
    run = max((ns.work / name).glob("*_fit*"), key=lambda p: p.stat().st_mtime)
    record = json.loads((run / "run.json").read_text())
    return {"name": name, "command": "tumorlab " + shlex.join(args), "wall_s": round(wall, 1), "run": str(run),
            "test_metrics": record.get("test_metrics"), "train_time_s": record.get("train_time_s"),
            "parameters": record.get("parameters"), "best_score": record.get("best_score")}  # fmt: skip


def table(rows: list[dict]) -> str:
    """Test accuracy, macro F1, per-class recall, train time and trainable parameters per run."""
    classes = sorted({k[len("recall_") :] for r in rows for k in (r["test_metrics"] or {}) if k.startswith("recall_")})
    header = ["run", "test acc", "macro F1", *(f"recall {c}" for c in classes), "train s", "wall s", "trainable"]
    body = []
    for r in rows:
        m = r["test_metrics"] or {}
        nan = float("nan")
        recalls = [f"{m.get(f'recall_{c}', nan):.3f}" for c in classes]
        trainable = f"{r['parameters']['trainable']:,}"
        row = [r["name"], f"{m.get('acc', nan):.3f}", f"{m.get('f1', nan):.3f}", *recalls]
        body.append([*row, f"{r['train_time_s']:.0f}", f"{r['wall_s']:.0f}", trainable])
    return markdown_table(header, body)


def main() -> None:
    ns = parse_args()
    if ns.quick:
        ns.epochs, ns.image_size, ns.batch_size, ns.train_batches = 1, 32, 4, 2
    start = time.perf_counter()
    imported = ["weights", "import", "efficientnet-lite0", "--out", str(ns.work / "weights")]
    subprocess.run(tumorlab_cmd(*imported), cwd=REPO, env=bench_env(), check=True)
    rows = [_fit(name, RUNS[name][1], RUNS[name][2], ns) for name in ns.runs]
    total = round(time.perf_counter() - start, 1)
    settings = {k: getattr(ns, k) for k in ("epochs", "image_size", "batch_size", "train_batches", "quick")}
    settings["root"] = str(ns.root)
    results = {"runs": rows, "total_wall_s": total, "groups": {n: RUNS[n][0] for n in ns.runs}}
    write_json(ns.out, "transfer", settings, results)
    print(table(rows))
    print(f"total wall time: {total} s")


if __name__ == "__main__":
    main()
