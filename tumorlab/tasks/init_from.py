"""Fine-tune from another run: ``model.init_from: RUN_DIR|CKPT`` starts a task from that run's weights.

A run folder gives its best checkpoint (``run.json``'s ``best_checkpoint``, else ``checkpoints/last.ckpt``).
What fits is kept: tensors are matched by name below the network's pretrained part (a classifier's
``backbone``, a U-Net's encoder, or the whole network), under whichever pairing of those parts shares the most
tensors of equal shape, so a 4-class classifier's backbone starts a binary classifier or the encoder of a U-Net
with the same timm architecture (``tu-<name>``). Everything else (a head of another width, a decoder) is new.
The target's pretrained part must be filled completely, else the checkpoint is of another architecture and is
refused. What was loaded and what is new is printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tumorlab.errors import ConfigError

__all__ = ["checkpoint_of", "load_init_from"]

# Where a network's pretrained part lives in a task's state dict, most specific first.
_PARTS = ("net.backbone.", "net.net.encoder.model.", "net.net.encoder.", "net.")


def checkpoint_of(value: str | Path) -> Path:
    """The checkpoint file that ``init_from`` names: a ``.ckpt`` file or a run folder's best checkpoint."""
    path = Path(value).expanduser()
    if path.is_dir():
        record = path / "run.json"
        best = json.loads(record.read_text()).get("best_checkpoint") if record.is_file() else None
        for candidate in (best, path / "checkpoints" / "last.ckpt"):
            if candidate and Path(candidate).is_file():
                return Path(candidate)
        raise ConfigError(
            f"model.init_from {path}: no checkpoint in that folder (no best_checkpoint in run.json, no "
            "checkpoints/last.ckpt); give a fit run folder or a .ckpt file"
        )
    if not path.is_file():
        raise ConfigError(f"model.init_from {path} does not exist; give a fit run folder or a .ckpt file")
    return path


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the reader's many error types: the file is not a checkpoint
        raise ConfigError(
            f"model.init_from {path} is not a readable checkpoint ({type(err).__name__}); give a .ckpt of a tumorlab "
            "fit or its run folder"
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("net.") for k in state):
        raise ConfigError(f"model.init_from {path} holds no tumorlab network weights (no state_dict with net.*)")
    return state


def _body(task: nn.Module, own: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """The target keys under ``prefix`` that must be filled: all of them, but for the whole network (``net.``)
    its classifier's last linear layer."""
    keys = [k for k in own if k.startswith(prefix)]
    if prefix != "net.":
        return keys
    linears = [n for n, m in task.net.named_modules() if isinstance(m, nn.Linear)]
    head = f"net.{linears[-1]}." if linears else None
    return [k for k in keys if head is None or not k.startswith(head)]


def load_init_from(task: nn.Module, value: str | Path) -> dict[str, int]:
    """Copy the matching tensors of ``value``'s checkpoint into ``task`` (in place); print and return the
    counts ``{"loaded", "new"}``. ``ConfigError`` when the target's pretrained part is not filled completely."""
    path = checkpoint_of(value)
    source = _read(path)
    own = task.state_dict()
    best: tuple[int, str, str, dict[str, str]] = (-1, "", "", {})
    for target_prefix in _PARTS:
        if not any(k.startswith(target_prefix) for k in own):
            continue
        for source_prefix in _PARTS:
            pairs = {
                k: source_prefix + k[len(target_prefix) :]
                for k in own
                if k.startswith(target_prefix)
                and source.get(source_prefix + k[len(target_prefix) :]) is not None
                and source[source_prefix + k[len(target_prefix) :]].shape == own[k].shape
            }
            if len(pairs) > best[0]:
                best = (len(pairs), target_prefix, source_prefix, pairs)
            if pairs and target_prefix != "net.":
                break
        if best[0] > 0 and target_prefix != "net.":
            break
    _, target_prefix, source_prefix, pairs = best
    if pairs and source_prefix == target_prefix:  # the same kind of network: whatever else fits comes along
        pairs = {k: k for k in own if k.startswith("net.") and k in source and source[k].shape == own[k].shape}
    body = _body(task, own, target_prefix) if target_prefix else []
    unfilled = [k for k in body if k not in pairs]
    if not pairs or unfilled:
        first = unfilled[0] if unfilled else next(iter(own))
        theirs = source.get(source_prefix + first[len(target_prefix) :]) if target_prefix else None
        why = f"{first}: {'absent' if theirs is None else tuple(theirs.shape)} there, {tuple(own[first].shape)} here"
        raise ConfigError(
            f"model.init_from {path} is of another architecture: {len(body) - len(unfilled)} of {len(body)} tensors "
            f"of this network's {target_prefix.rstrip('.') or 'net'} fit ({why}); start from a run of the same model"
        )
    with torch.no_grad():
        for k, theirs in pairs.items():
            own[k].copy_(source[theirs])
    new = [k for k in own if k.startswith("net.") and k not in pairs]
    shown = ", ".join(sorted({k.rsplit(".", 1)[0] for k in new})[:4]) or "nothing"
    print(
        f"init_from {path}: loaded {len(pairs)} tensors ({source_prefix}* -> {target_prefix}*), "
        f"{len(new)} new ({shown}{', ...' if len(new) > 4 else ''})"
    )
    return {"loaded": len(pairs), "new": len(new)}
