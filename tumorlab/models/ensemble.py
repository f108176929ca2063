"""Several trained models as one: their probabilities averaged, optionally over flipped copies of the input.

``EnsembleNet(members, tta=("hflip",))`` runs every member on the image (and on its left-right mirror image,
whose mask is mirrored back) and averages **probabilities**, as nnU-Net averages its five folds: softmax of
class logits, sigmoid of mask logits per pixel. It returns them in the members' own output form, as logits that
give back exactly the averaged probabilities (``log p`` for classes: ``softmax(log p) = p`` as ``p`` sums to 1;
``logit p`` for pixels: ``sigmoid(logit p) = p``), so a task's ``predict_step``, metrics and thresholds
(mask logit > 0 is probability > 0.5) work on an ensemble unchanged.

Members are any modules that return class logits ``(N, C)``, mask logits ``(N, 1, H, W)`` or a ``SegClsOutput``
(``mask_logits``, ``class_logits``): a task's ``forward`` or a bare network.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from tumorlab.models.unet import SegClsOutput

__all__ = ["TTA", "EnsembleNet", "average_probabilities", "ensemble_task"]

# Test-time augmentations: the name and the spatial dimensions it flips (its own inverse).
TTA = {"hflip": (-1,), "vflip": (-2,)}
_EPS = 1e-7  # keeps log and logit finite where a probability is 0 or 1


def _probabilities(out) -> dict[str, torch.Tensor]:
    """``{"class": softmax, "mask": sigmoid}`` of one member's output (the parts it has)."""
    if isinstance(out, SegClsOutput) or hasattr(out, "mask_logits"):
        return {"mask": out.mask_logits.sigmoid(), "class": out.class_logits.softmax(dim=1)}
    if out.dim() == 4:
        return {"mask": out.sigmoid()}
    return {"class": out.softmax(dim=1)}


def average_probabilities(outputs: Sequence) -> dict[str, torch.Tensor]:
    """The mean over ``outputs`` (member outputs of one input) of their class and per-pixel probabilities."""
    parts = [_probabilities(out) for out in outputs]
    kinds = {tuple(sorted(p)) for p in parts}
    if len(kinds) != 1:
        raise ValueError(f"ensemble members return different outputs: {sorted(kinds)}")
    return {k: torch.stack([p[k] for p in parts]).mean(dim=0) for k in parts[0]}


class EnsembleNet(nn.Module):
    """The average of ``members``' probabilities (over ``tta`` flips too), returned as logits.

    Args:
        members: the trained modules (in eval mode), all of one output form.
        tta: test-time augmentations from ``TTA`` (``hflip``: left-right mirror image). The identity is always
            included; each augmented prediction is mapped back (a mask is flipped back) before averaging.
    """

    def __init__(self, members: Sequence[nn.Module], tta: Sequence[str] = ()) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        unknown = [t for t in tta if t not in TTA]
        if unknown:
            raise ValueError(f"unknown test-time augmentation {unknown[0]!r}; known: {', '.join(TTA)}")
        self.members = nn.ModuleList(members)
        self.tta = tuple(tta)
        first = getattr(members[0], "net", members[0])
        self.num_classes = getattr(first, "num_classes", None)
        self.in_channels = getattr(first, "in_channels", None)

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Each member's ``cam_layer`` (a CAM of the ensemble averages the maps of all members' layers)."""
        return [getattr(m, "net", m).cam_layer for m in self.members]

    @property
    def cam_reshape(self):
        """The members' ``cam_reshape`` where they share one (ViT token grids), else ``None``."""
        shapes = {getattr(getattr(m, "net", m), "cam_reshape", None) for m in self.members}
        return shapes.pop() if len(shapes) == 1 else None

    def forward(self, x: torch.Tensor):
        outputs = []
        for dims in [None, *(TTA[t] for t in self.tta)]:
            seen = x if dims is None else torch.flip(x, dims)
            for member in self.members:
                out = member(seen)
                if dims is not None:  # map the prediction back to the original image
                    out = _unflip(out, dims)
                outputs.append(out)
        mean = average_probabilities(outputs)
        class_logits = mean["class"].clamp_min(_EPS).log() if "class" in mean else None
        mask_logits = torch.logit(mean["mask"], eps=_EPS) if "mask" in mean else None
        if class_logits is not None and mask_logits is not None:
            return SegClsOutput(mask_logits, class_logits)
        return class_logits if class_logits is not None else mask_logits


def _unflip(out, dims: tuple[int, ...]):
    """A member's output for a flipped image, flipped back: masks only (class logits do not move)."""
    if isinstance(out, SegClsOutput) or hasattr(out, "mask_logits"):
        return SegClsOutput(torch.flip(out.mask_logits, dims), out.class_logits)
    return torch.flip(out, dims) if out.dim() == 4 else out


def ensemble_task(tasks: Sequence[nn.Module], tta: Sequence[str] = ()) -> nn.Module:
    """A copy of the first task with an ``EnsembleNet`` of all ``tasks`` as its ``net`` (in eval mode): its
    steps, metrics and ``predict_step`` then score the ensemble as they score one model."""
    tasks = [t.eval() for t in tasks]
    host = copy.deepcopy(tasks[0])
    host.net = EnsembleNet(tasks, tta)
    return host.eval()
