"""Checkpoint files written atomically, and checked against the model before a resume loads them.

``AtomicCheckpointIO`` (which ``ResumeCheckpoint`` installs) writes a temporary file in the checkpoint's own
folder, flushes it to disk and renames it over the old file, so a process killed while saving leaves the previous
checkpoint whole. Lightning's own writer goes through an fsspec transaction whose temporary file lies in the
system's temporary folder; where that is another file system the final "rename" is a copy, and a kill during the
copy leaves a truncated checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch import LightningModule

from tumorlab.errors import ConfigError, RunError

__all__ = ["AtomicCheckpointIO", "check_checkpoint_fits"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that replaces a local checkpoint atomically and names the file when it cannot.

    The checkpoint goes to a new ``.<name>.<random>.tmp`` beside the target, is flushed to disk (``fsync``) and renamed
    over the target (``os.replace``, atomic within one file system): readers see the old file or the new
    one, never a part. A failed write (``ENOSPC``: the disk is full) removes the temporary file, leaves the
    previous checkpoint as it was and raises a ``RunError`` naming the checkpoint and the cause. Remote
    paths (``s3://`` ...) go to Lightning's writer unchanged.

    Args:
        model: where given, a checkpoint read to resume from is checked against it first
            (``check_checkpoint_fits``): another model or another number of classes is one clear error.
    """

    def __init__(self, model: LightningModule | None = None) -> None:
        super().__init__()
        self.model = model

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(path, *args, **kwargs)
        if self.model is not None:
            check_checkpoint_fits(checkpoint, self.model, str(path))
        return checkpoint

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)  # a name of its own for every save, so that no two writers ever share a file
        try:
            # Ctrl-C waits for the write: a KeyboardInterrupt inside torch.save's zip writer comes out as a
            # RuntimeError ("unexpected pos"), which would hide the interrupt from ResumeCheckpoint
            with _sigint_deferred():
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            cause = os.strerror(err.errno) if err.errno else str(err)
            hint = "; free some space or set --run.root to another disk" if err.errno == errno.ENOSPC else ""
            kept = "the previous one is unchanged" if path.exists() else "there was no previous one"
            raise RunError(f"could not write checkpoint {path}: {cause} ({kept}){hint}") from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT back until the block ends, then raise the ``KeyboardInterrupt`` it would have raised (main
    thread only: other threads cannot set signal handlers and do not receive SIGINT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        if previous is not None:  # None: a handler set outside Python, which signal() cannot restore
            signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def check_checkpoint_fits(checkpoint: dict[str, Any], module: LightningModule, path: str) -> None:
    """Raise a ``ConfigError`` naming ``path`` if its weights do not fit ``module`` (another model or another
    number of classes), instead of the page of missing keys that ``load_state_dict`` prints."""
    saved = checkpoint.get("state_dict", {})
    own = module.state_dict()
    missing = sorted(own.keys() - saved.keys())
    unexpected = sorted(saved.keys() - own.keys())
    if (missing and module.strict_loading) or unexpected:
        first = (missing or unexpected)[0]
        raise ConfigError(
            f"--ckpt_path {path}: a checkpoint of another model: {len(missing)} weights of "
            f"{type(module).__name__} are missing from it and {len(unexpected)} of its weights are unknown to "
            f"it (first: {first}); resume with the config the checkpoint was trained with"
        )
    shapes = [k for k in saved.keys() & own.keys() if tuple(saved[k].shape) != tuple(own[k].shape)]
    if shapes:
        key = sorted(shapes)[0]
        raise ConfigError(
            f"--ckpt_path {path}: weight {key} has shape {list(saved[key].shape)} in the checkpoint but "
            f"{list(own[key].shape)} in this model ({len(shapes)} such weights): the checkpoint comes from "
            "another configuration, e.g. another number of classes (data) or another network width"
        )
