"""``tumorlab prune``: the LGG study's pruning table for a trained run.

For each sparsity (one-shot: each from the dense model; ``iterative``: each from the previous one), the
network is pruned, tested, fine-tuned for ``finetune_epochs`` epochs and tested again, all through Lightning
with the run's own task and data module (rebuilt from its config.yaml). Fine-tuning keeps its best epoch by the
run's monitor on the validation split (or the pruned model itself if no epoch beats it), as ``fit`` keeps its
best checkpoint: on a small training split the last of a few noisy epochs is as often the worst as the best.
The table (``pruning.md`` and ``pruning.csv``) lands in a new folder beside the run,
``<root>/<name>/<time>_prune/``; each pruned model is a run folder of its own inside it (``s0.50/`` with
config.yaml, run.json and ``checkpoints/pruned.ckpt``), so ``tumorlab test --ckpt_path <time>_prune/s0.50``
evaluates it like any run.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import yaml
from lightning.pytorch import Callback, Trainer, seed_everything

from tumorlab.compression.latency import parameter_counts, time_model
from tumorlab.compression.prune import channel_prune, magnitude_prune, make_permanent, sparsities, weight_sparsity
from tumorlab.errors import ConfigError
from tumorlab.models.pruned import changed_shapes, original_net_config, pruned_net_config
from tumorlab.runs.folders import new_run_dir, run_info, update_run_json
from tumorlab.runs.load import LoadedRun, build_run, load_run
from tumorlab.tasks.metrics import monitor_mode

__all__ = ["PruneRow", "prune_run", "format_prune_table"]

Method = Literal["magnitude", "channel"]
_TRAINER_KEYS = ("accelerator", "precision", "limit_train_batches", "limit_val_batches", "limit_test_batches")


@dataclass
class PruneRow:
    """One sparsity of the pruning table (metrics are test-split values; ``nan`` where the task lacks one).

    ``kept_epoch`` is the fine-tuning epoch whose weights were kept, the best by the run's monitor on the
    validation split (0: no epoch beat the pruned model before fine-tuning); ``kept_val`` is that score.
    """

    method: str
    sparsity: float
    dense_acc: float
    pruned_acc: float
    finetuned_acc: float
    dense_dice: float
    pruned_dice: float
    finetuned_dice: float
    dense_auroc: float
    pruned_auroc: float
    finetuned_auroc: float
    kept_epoch: int
    kept_val: float
    params: int
    nonzero: int
    weight_sparsity: float
    latency_b1_ms: float
    speedup_b1: float
    checkpoint: str


def _trainer(config: dict, root: Path, epochs: int = 1, callbacks: list | None = None) -> Trainer:
    """A quiet Trainer with the run's accelerator, precision and batch limits (no logger, no checkpoints)."""
    saved = config.get("trainer") or {}
    kwargs = {k: saved[k] for k in _TRAINER_KEYS if saved.get(k) is not None}
    kwargs.setdefault("accelerator", "auto")
    return Trainer(
        **kwargs,
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        callbacks=callbacks or [],
    )


def _test(task, run: LoadedRun, root: Path) -> dict[str, float]:
    trainer = _trainer(run.config, root)
    (metrics,) = trainer.test(task, datamodule=run.datamodule, verbose=False)
    return {k: float(metrics.get(f"test/{k}", math.nan)) for k in ("acc", "auroc", "dice")}


class _KeepBest(Callback):
    """Remember the weights of the best validation epoch by the task's monitor (in memory, no files)."""

    def __init__(self, monitor: str, score: float, state: dict) -> None:
        self.monitor, self.mode = monitor, monitor_mode(monitor)
        self.score, self.state, self.epoch = score, state, 0  # epoch 0: the pruned model before fine-tuning

    def _better(self, score: float) -> bool:
        if math.isnan(score):
            return False
        return math.isnan(self.score) or (score > self.score if self.mode == "max" else score < self.score)

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        score = math.nan if value is None else float(value)
        if not trainer.sanity_checking and self._better(score):
            self.score, self.epoch = score, trainer.current_epoch + 1
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _val_score(task, run: LoadedRun, root: Path) -> float:
    if not task.monitor.startswith("val/"):
        raise ConfigError(f"fine-tuning keeps the best epoch by model.monitor, a val/ metric; got {task.monitor!r}")
    (metrics,) = _trainer(run.config, root).validate(task, datamodule=run.datamodule, verbose=False)
    return float(metrics.get(task.monitor, math.nan))


def _with_lr(factory, lr: float):
    """The run's optimiser factory, every parameter group started at ``lr`` instead."""

    def build(params):
        optimizer = factory(params)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return optimizer

    return build


def _finetune(task, run: LoadedRun, root: Path, epochs: int, lr: float | None) -> tuple[int, float]:
    """Fine-tune ``task`` for ``epochs`` epochs and keep its best validation epoch (0: none beat the pruned
    model itself); returns that epoch and its score by the task's monitor.

    Keeping the last epoch instead lets a few noisy epochs on a small training split decide the pruned model.
    """
    if epochs <= 0:
        task.eval()
        return 0, math.nan
    keep = _KeepBest(task.monitor, _val_score(task, run, root), {k: v.clone() for k, v in task.state_dict().items()})
    factory = task.optimizer_factory
    if lr is not None:
        task.optimizer_factory = _with_lr(factory, lr)
    task.train()  # Lightning keeps the mode it finds; dropout and BatchNorm must train
    trainer = _trainer(run.config, root, epochs, callbacks=[keep])
    try:
        trainer.fit(task, datamodule=run.datamodule)
    finally:
        task.optimizer_factory = factory
    task.load_state_dict(keep.state)
    task.eval()
    return keep.epoch, keep.score


def _example(run: LoadedRun) -> torch.Tensor:
    dm = run.datamodule
    return torch.randn(2, int(dm.in_channels), int(dm.image_size), int(dm.image_size))


def _fresh_task(run: LoadedRun, state: dict):
    task, _ = build_run(run.config)  # a data module too, never set up: only the task is used
    task.load_state_dict(state)
    return task.eval()


def _save(task, run: LoadedRun, folder: Path, method: str, sparsity: float, metrics: dict, dense_net) -> Path:
    """Write the pruned model as a run folder: config.yaml, run.json, checkpoints/pruned.ckpt.

    The checkpoint holds plain tensors and numbers only (``torch.load(..., weights_only=True)`` reads it); a
    channel-pruned network's narrower layers are rebuilt from the shapes its config.yaml lists.
    """
    folder.mkdir(parents=True)
    config = run.config
    if method == "channel":
        config = pruned_net_config(config, changed_shapes(dense_net, task.net))
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    ckpt = folder / "checkpoints" / "pruned.ckpt"
    ckpt.parent.mkdir()
    import lightning

    torch.save(
        {
            "state_dict": task.state_dict(),
            "pytorch-lightning_version": lightning.__version__,
            "epoch": 0,
            "global_step": 0,
            "tumorlab_pruning": {"method": method, "sparsity": sparsity, "pruned_from": str(run.checkpoint)},
        },
        ckpt,
    )
    # what the pruned model shares with the model it was pruned from: how its inputs are prepared, its classes
    source = json.loads((Path(run.run_dir) / "run.json").read_text())
    inherited = {k: source[k] for k in ("preprocessing", "class_names") if source.get(k) is not None}
    update_run_json(
        folder,
        **inherited,
        command="prune",
        pruned_from=str(run.run_dir),
        method=method,
        sparsity=sparsity,
        best_checkpoint=str(ckpt.resolve()),
        test_metrics={f"test/{k}": v for k, v in metrics.items()},
        parameters={**_counts(task), "nonzero": parameter_counts(task)[1]},
    )
    return ckpt


def _counts(task) -> dict[str, int]:
    """``total`` and ``trainable`` (``requires_grad``) parameters, counted as a fit counts them for run.json."""
    counts = getattr(task, "parameter_counts", None)
    if callable(counts):
        return counts()
    params = list(task.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def _latency(net, run: LoadedRun, n_threads: int) -> float:
    dm = run.datamodule
    shape = (int(dm.in_channels), int(dm.image_size), int(dm.image_size))
    (row,) = time_model("m", net.cpu(), shape, batch_sizes=(1,), n_threads=n_threads, runs=20)
    return row.timings[0].median_ms


def _prune(task, method: str, target: float, done: float, example: torch.Tensor) -> None:
    if method == "magnitude":
        magnitude_prune(task.net, target, permanent=False)  # masks stay while fine-tuning
    else:
        channel_prune(task.net, target, example, done=done)


def prune_run(
    ckpt_path: str | Path,
    sparsity: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
    method: Method = "magnitude",
    iterative: bool = False,
    finetune_epochs: int = 1,
    finetune_lr: float | None = None,
    n_threads: int = 1,
    argv: Sequence[str] = (),
) -> Path:
    """Prune the run ``ckpt_path`` to each of ``sparsity`` and write the table; returns the new folder.

    Args:
        ckpt_path: a run folder (its best checkpoint) or a checkpoint file inside ``RUN/checkpoints/``.
        sparsity: magnitude: fractions of conv/linear weights zeroed; channel: fractions of filters removed.
        method: ``magnitude`` (global L1, unstructured) or ``channel`` (Torch-Pruning, structured).
        iterative: prune step by step through the sorted sparsities, fine-tuning after each, instead of
            pruning the dense model to each one.
        finetune_epochs: epochs of training (the run's task, optimiser and data) after each pruning step; the
            epoch kept is the best by the run's monitor on the validation split (the test split never chooses).
        finetune_lr: the fine-tuning optimiser's learning rate; ``None`` keeps the run's own.
        n_threads: CPU threads for the batch-1 latency column.
        argv: the command line, for run.json.
    """
    if method not in ("magnitude", "channel"):
        raise ConfigError(f"--method must be 'magnitude' or 'channel', got {method!r}")
    if finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if finetune_lr is not None and not finetune_lr > 0:
        raise ConfigError(f"--finetune-lr must be a positive learning rate, got {finetune_lr}")
    targets = sparsities(sparsity)
    run = load_run(ckpt_path)
    seed_everything(int(run.config.get("seed_everything") or 42), verbose=False)
    out = new_run_dir(run.run_dir.parent.parent, run.run_dir.parent.name, "prune")
    out.mkdir(parents=True)
    update_run_json(out, **run_info("prune", list(argv)), pruned_from=str(run.run_dir), method=method)
    dense_state = {k: v.clone() for k, v in run.task.state_dict().items()}
    dense = _test(run.task, run, out)
    dense_net = build_run({**run.config, "model": original_net_config(run.config)})[0].net
    dense_latency = _latency(run.task.net, run, n_threads)
    example = _example(run)
    rows, task, done = [], None, 0.0
    for target in targets:
        if task is None or not iterative:
            task, done = _fresh_task(run, dense_state), 0.0
        _prune(task, method, target, done, example)
        before = _test(task, run, out)
        kept, kept_val = _finetune(task, run, out, finetune_epochs, finetune_lr)
        make_permanent(task.net)
        after = _test(task, run, out)
        done = target
        ckpt = _save(task, run, out / f"s{target:.2f}", method, target, after, dense_net)
        params, nonzero = parameter_counts(task.net)
        zeros, total = weight_sparsity(task.net)
        latency = _latency(task.net, run, n_threads)
        rows.append(
            PruneRow(
                method,
                target,
                *(m[k] for k in ("acc", "dice", "auroc") for m in (dense, before, after)),
                kept,
                kept_val,
                params,
                nonzero,
                zeros / total,
                latency,
                dense_latency / latency,
                str(ckpt.relative_to(out)),
            )
        )
    write_prune_table(rows, out, run, iterative, finetune_epochs, n_threads, finetune_lr)
    update_run_json(out, rows=[asdict(r) for r in rows], dense_test_metrics=dense, dense_latency_b1_ms=dense_latency)
    return out


def write_prune_table(
    rows: list[PruneRow], out: Path, run: LoadedRun, iterative: bool, epochs: int, n: int, lr: float | None = None
) -> None:
    """``pruning.csv`` (every field) and ``pruning.md`` (the table, with what produced it) in ``out``."""
    with (out / "pruning.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    mode = "iterative (each step from the previous one)" if iterative else "one-shot (each from the dense model)"
    rate = "the run's learning rate" if lr is None else f"learning rate {lr:g}"
    tuning = (
        f"{epochs} fine-tuning epoch(s) per step at {rate}, keeping the best epoch by {run.task.monitor} on the "
        "validation split (kept epoch 0: the pruned model itself)"
        if epochs
        else "no fine-tuning"
    )
    intro = (
        f"# Pruning {run.run_dir}\n\n{rows[0].method} pruning, {mode}, {tuning}; metrics on the test split; "
        f"batch-1 CPU latency at {n} thread(s).\n\n"
    )
    (out / "pruning.md").write_text(intro + format_prune_table(rows))


def format_prune_table(rows: Sequence[PruneRow]) -> str:
    """The Markdown table: one row per sparsity; accuracy, AUROC and Dice columns where the task has them."""
    dice = any(not math.isnan(r.dense_dice) for r in rows)
    acc = any(not math.isnan(r.dense_acc) for r in rows)
    auroc = any(not math.isnan(r.dense_auroc) for r in rows)
    head = ["sparsity"]
    head += ["dense acc", "pruned acc", "fine-tuned acc"] if acc else []
    head += ["dense AUROC", "pruned AUROC", "fine-tuned AUROC"] if auroc else []
    head += ["dense Dice", "pruned Dice", "fine-tuned Dice"] if dice else []
    head += ["kept epoch", "params", "non-zero", "zero weights", "b1 latency ms", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r.sparsity:.0%}"]
        cells += [f"{v:.4f}" for v in (r.dense_acc, r.pruned_acc, r.finetuned_acc)] if acc else []
        cells += [f"{v:.4f}" for v in (r.dense_auroc, r.pruned_auroc, r.finetuned_auroc)] if auroc else []
        cells += [f"{v:.4f}" for v in (r.dense_dice, r.pruned_dice, r.finetuned_dice)] if dice else []
        cells += [
            str(r.kept_epoch),
            f"{r.params:,}",
            f"{r.nonzero:,}",
            f"{r.weight_sparsity:.1%}",
            f"{r.latency_b1_ms:.2f}",
        ]
        cells.append(f"{r.speedup_b1:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(out: Path) -> str:
    """What ``tumorlab prune`` prints: the table and where it is."""
    record = json.loads((out / "run.json").read_text())
    return (out / "pruning.md").read_text() + f"\nfolder: {out} ({len(record.get('rows', []))} pruned models)"
