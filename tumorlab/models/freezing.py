"""Which parameters of a network train: Keras-style layers and timm's parameter groups.

Two ways of counting what to keep trainable, both in forward order:

- **Layers** (``trainable_layers``, Keras' ``model.layers[-N:]``): a layer is a module that owns parameters
  directly (a convolution, a linear layer, a BatchNorm, a LayerNorm, a ViT's top module with its ``cls_token``
  and ``pos_embed``, a Swin attention with its relative-position table, a ConvNeXt block with its ``gamma``).
  Freezing a layer freezes only the parameters it owns (``recurse=False``): a parent that owns a parameter
  never freezes its children through it, so every layer is counted and frozen exactly once.
- **Groups** (``trainable_blocks``): timm's own ``group_matcher(coarse=False)``, the grouping its layer-wise
  learning-rate decay uses: the stem, then each block, then what follows the blocks (a final norm or 1x1 head
  convolution), for every timm family. ``timm.models.group_parameters`` assigns each parameter to its group.
"""

from __future__ import annotations

from torch import nn

from tumorlab.errors import ConfigError

__all__ = [
    "freeze_all_but_groups",
    "freeze_all_but_layers",
    "group_label",
    "parameterised_layers",
    "timm_groups",
    "trainable_layer_count",
]


def parameterised_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module that owns parameters directly, in registration order."""
    return [(n, m) for n, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def trainable_layer_count(module: nn.Module) -> int:
    """How many layers (see ``parameterised_layers``) own at least one parameter that trains."""
    return sum(any(p.requires_grad for p in m.parameters(recurse=False)) for _, m in parameterised_layers(module))


def freeze_all_but_layers(module: nn.Module, n: int, label: str) -> None:
    """Freeze the parameters owned by every layer of ``module`` but the last ``n``; ``label`` names the model
    in the ``ConfigError`` for ``n`` out of range."""
    layers = parameterised_layers(module)
    if not 1 <= n <= len(layers):
        raise ConfigError(
            f"trainable_layers is {n} but {label} with its head has {len(layers)} parameterised layers; "
            f"choose 1..{len(layers)} (or freeze_backbone: true for the head only)"
        )
    for _, layer in layers[: len(layers) - n]:
        for p in layer.parameters(recurse=False):
            p.requires_grad_(False)


def timm_groups(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of each of timm's groups of ``backbone`` in forward order (``group_matcher(coarse=False)``)."""
    from timm.models import group_parameters

    matcher = getattr(backbone, "group_matcher", None)
    if not callable(matcher):
        raise ConfigError(f"{type(backbone).__name__} has no timm group_matcher; use trainable_layers instead")
    groups = group_parameters(backbone, matcher(coarse=False))
    return [list(groups[k]) for k in sorted(groups)]


def group_label(names: list[str]) -> str:
    """A short name of a group of parameter names: the module path they share (``blocks.5``), else the shared
    path of each top-level module joined by ``+`` (``conv_stem+bn1``, ``blocks.6.0+conv_head+bn2``)."""
    runs: dict[str, list[list[str]]] = {}
    for name in names:
        path = name.split(".")
        module = path[:-1] or path  # a parameter of the top module (cls_token) names itself
        runs.setdefault(module[0], []).append(module)
    labels = []
    for paths in runs.values():
        common: list[str] = []
        for level in zip(*paths, strict=False):  # up to the shortest path
            if len(set(level)) != 1:
                break
            common.append(level[0])
        labels.append(".".join(common))
    return "+".join(labels)


def freeze_all_but_groups(backbone: nn.Module, n: int, label: str) -> list[list[str]]:
    """Freeze ``backbone`` except its last ``n`` timm groups; return the groups. ``n`` 0 freezes it whole."""
    groups = timm_groups(backbone)
    if not 0 <= n <= len(groups):
        labels = ", ".join(group_label(g) for g in groups[:2]) + " ... " + group_label(groups[-1])
        raise ConfigError(
            f"trainable_blocks is {n} but {label} has {len(groups)} timm parameter groups ({labels}); "
            f"choose 0..{len(groups)}"
        )
    backbone.requires_grad_(False)
    wanted = {name for group in groups[len(groups) - n :] for name in group}
    for name, p in backbone.named_parameters():
        if name in wanted:
            p.requires_grad_(True)
    return groups
