"""Channel-pruned networks in configs: ``ChannelPruned`` and the config helpers of a pruned run.

A trained run, pruned or not, is rebuilt by ``tumorlab.runs.load.load_run`` (one loader for reports, Grad-CAM,
pruning, export and latency); this module only defines the network a pruned run's config names.

A channel-pruned network cannot be built from its original config (its layers are narrower). Its config names
``ChannelPruned`` (or ``ChannelPrunedUNet`` for the two-headed U-Net) instead: the original network's config plus
the shape of every tensor that pruning changed. Building it builds the original network and narrows those layers,
so the checkpoint's ``state_dict`` (plain tensors, loadable with ``weights_only=True``) fits it, and
``tumorlab test|predict --ckpt_path`` and ``load_run`` work on a pruned run folder like on any other.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
import yaml
from torch import nn

from tumorlab.errors import ConfigError
from tumorlab.models.unet import UNetWithClassifier

__all__ = [
    "ChannelPruned",
    "ChannelPrunedUNet",
    "changed_shapes",
    "narrow_to",
    "original_net_config",
    "pruned_net_config",
]


def _instantiate_net(node: dict) -> nn.Module:
    """The network of ``{class_path, init_args}``, instantiated with jsonargparse as the CLI does, without
    reading starting weights (the caller loads a run's)."""
    from jsonargparse import ArgumentParser

    import tumorlab.models  # noqa: F401  (short class names)
    from tumorlab.models.weights import from_checkpoint

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "net", required=True)
    cfg = parser.parse_object({"net": node})
    with from_checkpoint():  # a trained run's weights are loaded next: no starting weights are read
        return parser.instantiate_classes(cfg)["net"]


def _net_accepts(class_path: str) -> set[str]:
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return set(inspect.signature(cls).parameters)


def _replace_tensor(module: nn.Module, name: str, shape: list[int]) -> None:
    old = getattr(module, name)
    new = torch.zeros(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module._buffers[name] = new


def _fix_attributes(module: nn.Module) -> None:
    """Make a narrowed layer's size attributes agree with its new tensors."""
    if isinstance(module, nn.modules.conv._ConvNd):
        out, per_group = module.weight.shape[:2]
        old_per_out = module.out_channels // module.groups
        groups = max(1, out // old_per_out) if module.groups > 1 else 1
        module.out_channels, module.groups, module.in_channels = out, groups, per_group * groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = (module.weight if module.weight is not None else module.running_mean).shape[0]


def narrow_to(net: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Give the tensors named in ``shapes`` (``state_dict`` keys of ``net``) those shapes, in place.

    Values are zeros: the checkpoint's weights are loaded afterwards. Raises ``ConfigError`` for a name that
    ``net`` lacks (the config and the pruned structure belong to different networks).
    """
    tensors = dict(net.named_parameters()) | dict(net.named_buffers())
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise ConfigError(
            f"the pruned structure names tensors the network lacks ({', '.join(missing[:3])}); "
            "the structure and model.net belong to different networks"
        )
    touched = set()
    for key, shape in shapes.items():
        owner, _, name = key.rpartition(".")
        module = net.get_submodule(owner) if owner else net
        _replace_tensor(module, name, list(shape))
        touched.add(owner)
    for owner in touched:
        _fix_attributes(net.get_submodule(owner) if owner else net)
    return net


def _build_pruned(net: dict, shapes: dict, **linked: Any) -> nn.Module:
    node = yaml.safe_load(yaml.safe_dump(net))
    accepts = _net_accepts(node["class_path"])
    node.setdefault("init_args", {})
    for name, value in linked.items():
        if name in accepts and value is not None:
            node["init_args"][name] = value
    built = _instantiate_net(node)
    return narrow_to(built, shapes)


class ChannelPruned(nn.Module):
    """A channel-pruned network, for configs: builds ``net`` and narrows the layers listed in ``shapes``.

    Constructing it returns the rebuilt network itself (a ``CNN9``, ``ResNet3`` ...), not a wrapper, so state
    dict keys, ``cam_layer`` and ``preprocessing`` are the original network's.

    Args:
        net: the original network's config (``class_path`` and ``init_args``), as in the run's config.yaml.
        shapes: ``state_dict`` key -> shape, for every tensor channel pruning changed.
        in_channels: linked from the data module (passed to ``net`` when it takes it).
        num_classes: linked from the data module.
        image_size: linked from the data module.
        mask_channels: linked from the data module (the U-Net's segmentation head).
    """

    def __new__(cls, net: dict, shapes: dict[str, list[int]], **linked: int | None) -> nn.Module:
        return _build_pruned(net, shapes, **linked)  # the arguments are __init__'s (the signature configs see)

    def __init__(
        self,
        net: dict,
        shapes: dict[str, list[int]],
        in_channels: int | None = None,
        num_classes: int | None = None,
        image_size: int | None = None,
        mask_channels: int | None = None,
    ) -> None:  # never runs: __new__ returns the rebuilt network; kept for the signature jsonargparse reads
        super().__init__()


class ChannelPrunedUNet(ChannelPruned, UNetWithClassifier):
    """``ChannelPruned`` for tasks that require a ``UNetWithClassifier`` (``MultiTaskTask``); same arguments
    (``__new__`` and ``__init__`` are ``ChannelPruned``'s; the base only satisfies the task's type hint)."""


def changed_shapes(dense: nn.Module, pruned: nn.Module) -> dict[str, list[int]]:
    """``state_dict`` key -> shape for every tensor of ``pruned`` whose shape differs from ``dense``'s."""
    before = {k: list(v.shape) for k, v in dense.state_dict().items()}
    return {k: list(v.shape) for k, v in pruned.state_dict().items() if before.get(k) != list(v.shape)}


def original_net_config(config: dict) -> dict:
    """``config["model"]`` with a ``ChannelPruned`` network replaced by the original (dense) network's config."""
    model = yaml.safe_load(yaml.safe_dump(config["model"]))
    net = model.get("init_args", {}).get("net")
    if isinstance(net, dict) and net.get("class_path", "").rsplit(".", 1)[-1] in ("ChannelPruned", "ChannelPrunedUNet"):
        model["init_args"]["net"] = net["init_args"]["net"]
    return model


def pruned_net_config(config: dict, shapes: dict[str, list[int]]) -> dict:
    """``config`` (a run's config.yaml) with ``model.init_args.net`` replaced by its ``ChannelPruned`` form;
    ``shapes`` are relative to the original (dense) network."""
    config = {**yaml.safe_load(yaml.safe_dump(config)), "model": original_net_config(config)}
    net = config["model"]["init_args"]["net"]
    unet = net["class_path"].rsplit(".", 1)[-1] == "UNetWithClassifier"
    name = "ChannelPrunedUNet" if unet else "ChannelPruned"
    config["model"]["init_args"]["net"] = {
        "class_path": f"{__name__}.{name}",
        "init_args": {"net": net, "shapes": shapes},
    }
    return config
