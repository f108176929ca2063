"""The contract between data, model and config: what the data module sets in the network, once.

- ``num_classes``, ``in_channels``, ``image_size`` and ``mask_channels`` are attributes of every tumorlab DataModule
  right after construction; LightningCLI links them into the network's constructor (``model.init_args.net.init_args.*``,
  ``apply_on="instantiate"``), so experiment configs never repeat them. A network without such an argument
  (``CNN9`` has no ``image_size``) is simply not given it.
- The head's width is the data module's ``model_num_classes`` where it has one (a test of a trained model on
  other data: ``FolderDataModule(model_classes=...)``), so a 4-class model scored as tumour / no tumour
  (``--data.binary true``) keeps its 4 outputs and its checkpoint loads (``head_classes``, ``link_net_args``).
- A value set by hand in a config or on the command line that contradicts the data is refused in one line
  naming both values (``check_explicit_links``): a link would otherwise overwrite it without a word.
- Normalisation comes from the network's declared ``preprocessing`` (timm's ``pretrained_cfg``, an smp
  encoder's weights, ImageNet statistics for networks trained from scratch); ``apply_normalization`` hands it
  to the data module and writes it into the config, so ``config.yaml`` and ``run.json`` show what was applied.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

from jsonargparse import Namespace

from tumorlab.errors import ConfigError

__all__ = [
    "LINKED_NET_ARGS",
    "apply_normalization",
    "check_explicit_links",
    "explicit_value",
    "fix_null_strings",
    "head_classes",
    "link_net_args",
]

# data module attribute -> network constructor argument (the same name on both sides)
LINKED_NET_ARGS = ("num_classes", "in_channels", "image_size", "mask_channels")
_NET_KEY = "model.init_args.net.init_args"


def head_classes(datamodule: Any) -> int:
    """The number of outputs the network's head gets: ``datamodule.model_num_classes`` where the data is
    evaluated with a model trained on other classes (set from the run), else ``datamodule.num_classes``."""
    width = getattr(datamodule, "model_num_classes", None)
    return int(width) if width is not None else datamodule.num_classes


def link_net_args(parser: Any) -> None:
    """Link the data module's sizes into the network's constructor (``LINKED_NET_ARGS``, at instantiation)."""
    for name in LINKED_NET_ARGS:
        if name == "num_classes":  # the whole data module is the source: head_classes reads two attributes
            parser.link_arguments("data", f"{_NET_KEY}.num_classes", compute_fn=head_classes, apply_on="instantiate")
        else:
            parser.link_arguments(f"data.{name}", f"{_NET_KEY}.{name}", apply_on="instantiate")


def explicit_value(explicit: Namespace | None, key: str) -> Any:
    """The value of dotted ``key`` in a namespace parsed without defaults, or ``None`` where it was not given."""
    if explicit is None:
        return None
    try:
        return explicit.get(key)
    except (KeyError, AttributeError, TypeError):
        return None


def check_explicit_links(explicit: Namespace | None, datamodule: Any) -> None:
    """Refuse a hand-set network argument that the data module contradicts (the link would silently win)."""
    for name in LINKED_NET_ARGS:
        given = explicit_value(explicit, f"{_NET_KEY}.{name}")
        data_value = head_classes(datamodule) if name == "num_classes" else getattr(datamodule, name, None)
        if given is not None and data_value is not None and given != data_value:
            raise ConfigError(
                f"model.net.init_args.{name} is {given} but the data ({type(datamodule).__name__}) gives "
                f"{name} {data_value}; remove model.net.init_args.{name}: the data module sets it"
            )


def apply_normalization(config: Namespace, explicit: Namespace | None, net: Any, datamodule: Any) -> dict | None:
    """Give the data module the network's mean/std for its channels and record them in ``config``.

    A ``data.normalize`` given by hand wins, with a one-line note when it differs from what the network declares.
    Returns ``{"mean", "std", "source"}`` as applied, or ``None`` where data or network take no part in this.
    """
    pre = getattr(net, "preprocessing", None)
    if pre is None or not callable(getattr(datamodule, "set_normalization", None)):
        return None
    channels = list(getattr(datamodule, "channels", None) or range(len(pre.mean)))
    want = {"mean": [float(pre.mean[c]) for c in channels], "std": [float(pre.std[c]) for c in channels]}
    given = explicit_value(explicit, "data.init_args.normalize")
    if given:
        given = {k: [float(v) for v in given[k]] for k in ("mean", "std") if k in given}
        if given != want:
            print(
                f"tumorlab: note: data.normalize {given} replaces the network's own {want} ({pre.source})",
                file=sys.stderr,
            )
        datamodule.set_normalization(given["mean"], given["std"], "data.normalize")
        return {**given, "source": "data.normalize"}
    datamodule.set_normalization(want["mean"], want["std"], pre.source)
    init_args = config.get("data.init_args")
    if init_args is not None and "normalize" in init_args:
        init_args.normalize = dict(want)
    return {**want, "source": pre.source}


def _nested_classes(node: Any) -> Iterator[Namespace]:
    """Every ``class_path``/``init_args`` namespace below ``node``."""
    if isinstance(node, Namespace):
        if isinstance(node.get("class_path"), str) and isinstance(node.get("init_args"), Namespace):
            yield node
        for value in vars(node).values():
            yield from _nested_classes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _nested_classes(item)


def fix_null_strings(config: Namespace) -> None:
    """Turn the text ``"None"`` back into ``None`` for arguments that accept ``None``.

    jsonargparse (4.53) parses ``--model.net.init_args.encoder_weights=null`` for a class nested inside another
    class's ``init_args`` into the string ``"None"`` instead of ``None`` (a YAML ``null`` arrives as ``None``).
    Written by hand because no option of jsonargparse changes it; only parameters annotated with ``None``
    among their types are touched, so a genuine string argument is never rewritten.
    """
    for node in _nested_classes(config):
        module, _, name = node.class_path.rpartition(".")
        try:
            params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        except (ImportError, ValueError, TypeError, AttributeError):
            continue
        for arg, value in vars(node.init_args).items():
            if value in ("None", "null") and arg in params and _accepts_none(params[arg]):
                setattr(node.init_args, arg, None)


def _accepts_none(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    if isinstance(annotation, str):
        return "None" in annotation or "Optional" in annotation
    return type(None) in getattr(annotation, "__args__", ()) or param.default is None
