"""Pruning a trained network: zeroing weights by magnitude (the LGG study) or removing whole channels.

Magnitude pruning (``magnitude_prune``) is global L1 unstructured pruning with ``torch.nn.utils.prune``: the
fraction ``sparsity`` of the smallest-magnitude weights over all convolution and linear layers together is set
to zero (biases and normalisation layers are kept). While fine-tuning, the masks stay attached, so pruned weights
stay zero; ``make_permanent`` then folds them into plain ``weight`` tensors, so a saved model loads as a plain
network. A dense kernel multiplies zeros as fast as anything else: this makes models smaller once compressed,
not faster.

Channel pruning (``channel_prune``) removes whole filters with Torch-Pruning's dependency graph (``MetaPruner``
with an L1 ``MagnitudeImportance``): every layer that consumes a removed channel (BatchNorm, the next
convolution, residual additions, U-Net skip concatenations) shrinks with it, so the network really is smaller
and faster. The output layers (classifier, segmentation head) keep their width.

``MagnitudePruning`` is the Lightning callback form, so a YAML config or a W&B sweep can vary the sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.utils import prune

from tumorlab.errors import ConfigError

__all__ = [
    "MagnitudePruning",
    "channel_prune",
    "check_sparsity",
    "magnitude_prune",
    "make_permanent",
    "prunable_weights",
    "sparsities",
    "weight_sparsity",
]

# Layer types Torch-Pruning narrows; a parameter held by any other module type stops channel pruning.
_CHANNEL_TYPES = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.PReLU,
    nn.Embedding,
)


def check_sparsity(value: float, what: str = "sparsity") -> float:
    """``value`` as a float in [0, 1), else ``ConfigError`` (1 would remove every weight)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must lie in [0, 1) (the fraction removed; 1 would remove everything), got {value}")
    return value


def prunable_weights(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` of every convolution and linear layer, as ``global_unstructured`` takes them."""
    return [(m, "weight") for m in net.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def _weight(module: nn.Module) -> torch.Tensor:
    # With a mask attached, ``weight`` is recomputed as weight_orig * mask before every forward only.
    if hasattr(module, "weight_mask"):
        return module.weight_orig * module.weight_mask
    return module.weight


def weight_sparsity(net: nn.Module) -> tuple[int, int]:
    """``(zeros, total)`` over the convolution and linear weights of ``net``."""
    weights = [_weight(m) for m, _ in prunable_weights(net)]
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def make_permanent(net: nn.Module) -> nn.Module:
    """Fold every pruning mask into its ``weight`` and drop the hooks (``prune.remove``), in place."""
    for module in net.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return net


def magnitude_prune(net: nn.Module, sparsity: float, permanent: bool = True) -> nn.Module:
    """Zero the fraction ``sparsity`` of all conv and linear weights with the smallest |w| (global L1), in place.

    Weights that are zero already (an earlier, lower sparsity of an iterative schedule) have the smallest
    magnitude, so they stay pruned. With ``permanent=False`` the masks stay attached (for fine-tuning: masked
    weights get no gradient); call ``make_permanent`` before saving.
    """
    sparsity = check_sparsity(sparsity)
    make_permanent(net)  # an earlier step's masks: their zeros are now the smallest weights
    params = prunable_weights(net)
    if not params:
        raise ConfigError(f"{type(net).__name__} has no convolution or linear layer to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    return make_permanent(net) if permanent else net


# -- channel pruning -----------------------------------------------------------------------------------------


def output_layers(net: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are the network's outputs: the classifier (and the U-Net's mask head)."""
    num_classes = getattr(net, "num_classes", None)
    layers = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    seg_head = getattr(getattr(net, "net", None), "segmentation_head", None)
    if seg_head is not None:
        layers += [m for m in seg_head.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return layers


def _check_traceable(net: nn.Module) -> None:
    """Refuse, naming the layer, a parameter that lives outside a layer type Torch-Pruning can narrow."""
    for name, module in net.named_modules():
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if own and not isinstance(module, _CHANNEL_TYPES):
            raise ConfigError(
                f"channel pruning cannot trace {type(net).__name__}: layer {name or '<root>'!r} "
                f"({type(module).__name__}) holds parameters {own} outside a convolution, linear or normalisation "
                "layer (e.g. a ViT's class token or position embedding); use --method magnitude for this model"
            )


def _as_tensor(out) -> torch.Tensor:
    """One tensor of every output (Torch-Pruning follows the graph back from it)."""
    if isinstance(out, tuple):
        return sum(o.sum() for o in out)
    return out


def _forward_check(net: nn.Module, example: torch.Tensor) -> None:
    """Run ``net`` on ``example``; a failure names the layer it happened in."""
    current: list[str] = []
    names = {m: n for n, m in net.named_modules()}
    hooks = [m.register_forward_pre_hook(lambda m, _: current.append(names[m])) for m in names]
    try:
        with torch.no_grad():
            net(example)
    except RuntimeError as err:
        layer = current[-1] if current else "<input>"
        raise ConfigError(
            f"channel pruning broke {type(net).__name__} at layer {layer!r}: {str(err).splitlines()[0]}"
        ) from None
    finally:
        for h in hooks:
            h.remove()


def channel_prune(
    net: nn.Module, ratio: float, example: torch.Tensor, done: float = 0.0, round_to: int | None = None
) -> nn.Module:
    """Remove the fraction ``ratio`` of the filters of every prunable layer, in place (Torch-Pruning).

    Args:
        net: the network; its output layers (``output_layers``) keep their width.
        ratio: the fraction of the *original* filters removed after this call, in [0, 1).
        example: an input batch of the right shape (the dependency graph is traced on it).
        done: the fraction already removed by earlier calls (an iterative schedule); this call removes
            ``1 - (1 - ratio) / (1 - done)`` of what is left.
        round_to: keep channel counts multiples of this (vectorised kernels like multiples of 8).
    """
    import torch_pruning as tp

    ratio, done = check_sparsity(ratio, "channel pruning ratio"), check_sparsity(done, "ratio already pruned")
    if ratio <= done:
        return net
    _check_traceable(net)
    was_training = net.training
    net.eval()
    step = 1.0 - (1.0 - ratio) / (1.0 - done)
    try:
        pruner = tp.pruner.MetaPruner(
            net,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=step,
            ignored_layers=output_layers(net),
            output_transform=_as_tensor,
            round_to=round_to,
        )
        pruner.step()
    except ConfigError:
        raise
    except Exception as err:  # Torch-Pruning raises plain errors from deep inside its graph tracing
        raise ConfigError(
            f"Torch-Pruning cannot trace {type(net).__name__}: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from None
    _forward_check(net, example)
    net.train(was_training)
    return net


# -- the Lightning callback ----------------------------------------------------------------------------------


class MagnitudePruning(Callback):
    """Prune the task's network by global L1 magnitude during ``fit``, as the LGG study did.

    The network trains dense until ``at_epoch``, is pruned to ``sparsity`` at that epoch's start and trains on
    (fine-tunes) with the pruned weights held at zero. With ``schedule`` it is pruned to each sparsity in turn,
    ``every_n_epochs`` apart (the study's 0.3 → 0.5 → 0.7 → 0.9). Every checkpoint holds plain weights with the
    zeros folded in (no ``weight_orig``/``weight_mask`` keys), so it loads as an ordinary model. Monitored
    checkpoints forget their best score at each pruning step: the best model of a pruned run is a pruned one.
    Logs ``prune/sparsity`` (the measured fraction of zero conv and linear weights).

    Args:
        sparsity: fraction of conv and linear weights set to zero, in [0, 1).
        at_epoch: the epoch (0-based) at whose start the network is pruned; 0 prunes the initial weights.
        schedule: several sparsities, increasing, applied one after the other (overrides ``sparsity``).
        every_n_epochs: epochs between the steps of ``schedule`` (fine-tuning between steps).
    """

    def __init__(
        self, sparsity: float = 0.5, at_epoch: int = 0, schedule: list[float] | None = None, every_n_epochs: int = 1
    ) -> None:
        super().__init__()
        steps = [check_sparsity(s, "MagnitudePruning schedule entry") for s in (schedule or [sparsity])]
        if sorted(steps) != steps:
            raise ConfigError(f"MagnitudePruning schedule must increase, got {steps}")
        if at_epoch < 0 or every_n_epochs < 1:
            raise ConfigError(
                f"MagnitudePruning at_epoch must be >= 0 and every_n_epochs >= 1, got {at_epoch}, {every_n_epochs}"
            )
        self.steps, self.at_epoch, self.every = steps, at_epoch, every_n_epochs
        self.sparsity = steps[-1]

    def target(self, epoch: int) -> float | None:
        """The sparsity the network should have at the start of ``epoch`` (``None`` before the first step)."""
        if epoch < self.at_epoch:
            return None
        return self.steps[min((epoch - self.at_epoch) // self.every, len(self.steps) - 1)]

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        target = self.target(trainer.current_epoch)
        if target is None:
            return
        net = _net_of(pl_module)
        zeros, total = weight_sparsity(net)
        if zeros / total + 0.5 / total < target or not _has_masks(net):
            # a new step, or a resumed fit whose checkpoint holds the zeros without masks
            magnitude_prune(net, target, permanent=False)
            _forget_best(trainer)
            rank_zero_info(f"MagnitudePruning: epoch {trainer.current_epoch}, sparsity {target:.0%}")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if self.target(trainer.current_epoch) is not None:
            zeros, total = weight_sparsity(_net_of(pl_module))
            pl_module.log("prune/sparsity", zeros / total, on_step=False, on_epoch=True, batch_size=1)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint["state_dict"] = fold_masks(checkpoint["state_dict"])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        make_permanent(_net_of(pl_module))


def fold_masks(state_dict: dict) -> dict:
    """A state dict with every ``X.weight_orig`` / ``X.weight_mask`` pair replaced by ``X.weight``."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state_dict:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state_dict:
            base = key[: -len("_orig")]
            out[base] = value * state_dict[base + "_mask"]
        else:
            out[key] = value
    return out


def _has_masks(net: nn.Module) -> bool:
    return any(hasattr(m, "weight_mask") for m in net.modules())


def _net_of(pl_module: LightningModule) -> nn.Module:
    net = getattr(pl_module, "net", None)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"MagnitudePruning needs a task holding its network as .net; {type(pl_module).__name__}")
    return net


def _forget_best(trainer: Trainer) -> None:
    """Monitored checkpoints start over: a dense checkpoint must not stay "best" of a pruned run."""
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) and hasattr(cb, "best_k_models"):
            cb.best_k_models = {}
            cb.best_model_score = None
            cb.best_model_path = ""
            cb.kth_best_model_path = ""
            cb.kth_value = torch.tensor(float("inf") if cb.mode == "min" else -float("inf"))


def sparsities(values: Sequence[float]) -> list[float]:
    """Checked, increasing, distinct sparsities (the rows of the pruning table)."""
    checked = sorted({check_sparsity(v) for v in values})
    if not checked:
        raise ConfigError("give at least one sparsity, e.g. --sparsity 0.3 0.5 0.7 0.9")
    return checked
