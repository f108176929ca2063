"""Stopping a run of several processes (DDP) together: one process's fault or Ctrl-C stops every process.

A process that raised alone would leave the others waiting in their next collective call for ever (or until the
process group's timeout): the non-finite guard and Ctrl-C therefore never raise on the spot under DDP. Each
process notes what it saw, and ``stop_every_rank`` (which ``FiniteGuard`` calls at the same point of every
training step in every process) decides together, with one all-reduce of one flag per step.

Ctrl-C under DDP: a terminal sends SIGINT to every process, but each receives it at another point of its step
(one inside an all-reduce, another in the data loader), and a ``KeyboardInterrupt`` raised at those points
leaves the others hanging in the next collective call, or in the checkpoint barrier of Lightning's interrupt
handler. ``DeferredInterrupt`` turns SIGINT into a flag instead; at the end of the step every process sees that
one of them was interrupted, all save ``last.ckpt`` together and all stop with the same one-line message. A
second Ctrl-C stops the process at once, without a checkpoint. Written by hand: Lightning has no distributed
interrupt handling of its own (its handler assumes every process got the signal at the same point).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Trainer

from tumorlab.errors import ConfigError, DataError, RunError, TumorlabError

__all__ = ["DeferredInterrupt", "Interrupted", "stop_every_rank"]


class Interrupted(RunError):
    """Every process of a run stopped because one of them got SIGINT (Ctrl-C); ``last.ckpt`` was saved."""


class DeferredInterrupt:
    """While installed (main thread only), the first SIGINT sets ``caught`` instead of raising; a second one
    restores the previous handler and raises ``KeyboardInterrupt`` at once."""

    def __init__(self) -> None:
        self.caught = False
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self.caught = False
        self._previous = signal.signal(signal.SIGINT, self._handle)
        self._installed = True

    def restore(self) -> None:
        if not self._installed:
            return
        self._installed = False
        if self._previous is not None:  # None: a handler set outside Python, which signal() cannot restore
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.caught:
            self.restore()
            raise KeyboardInterrupt
        self.caught = True
        print(
            "tumorlab: interrupt received: every process stops after this training step and saves last.ckpt "
            "(Ctrl-C again to stop this process at once, without a checkpoint)",
            file=sys.stderr,
            flush=True,
        )


def stop_every_rank(
    trainer: Trainer,
    error: TumorlabError | None,
    interrupted: bool = False,
    save: Callable[[], str | None] | None = None,
) -> None:
    """Raise ``error`` in every process when any process has one (``None``: this one has none).

    All processes call this at the same point; a cheap all-reduce of one flag decides, and only when it is set are
    the messages gathered, so every rank raises the same error, the first failing rank's, with that rank named.
    ``interrupted``: this process got SIGINT (``DeferredInterrupt``). When the only causes are interrupts, every
    process calls ``save`` (a collective checkpoint write, which returns the path written) and raises the same
    ``Interrupted`` message; a fault elsewhere wins over an interrupt, and nothing is saved then (the weights
    may be the fault).
    """
    if trainer.world_size == 1:
        if error is not None:
            raise error
        return
    if not trainer.strategy.reduce_boolean_decision(error is not None or interrupted, all=False):
        return
    import torch.distributed as dist

    mine = None
    if error is not None:
        mine = (type(error).__name__, str(error))
    elif interrupted:
        mine = ("Interrupted", "")
    gathered: list = [None] * trainer.world_size
    dist.all_gather_object(gathered, mine)
    faults = [(r, m) for r, m in enumerate(gathered) if m is not None and m[0] != "Interrupted"]
    if faults:
        rank, (kind, message) = faults[0]
        cls = DataError if kind == "DataError" else ConfigError
        raise cls(f"process {rank} of {trainer.world_size}: {message}")
    ranks = [r for r, m in enumerate(gathered) if m is not None]
    path = save() if save is not None else None
    who = f"process {ranks[0]}" if len(ranks) == 1 else f"processes {', '.join(map(str, ranks))}"
    kept = f"saved {path}" if path else "no checkpoint saved"
    raise Interrupted(
        f"{who} of {trainer.world_size} got Ctrl-C (SIGINT) at epoch {trainer.current_epoch}, step "
        f"{trainer.global_step}: every process stopped; {kept}; resume with: tumorlab {shlex.join(sys.argv[1:])} "
        f"--ckpt_path {trainer.default_root_dir}"
    )
