"""Weight initialisation shared by the custom architectures (CNN9, SmallCNN, ResNet3).

``"default"`` keeps PyTorch's own initialisation; ``"normal"`` draws weights from N(0, 0.1²) as in the LGG
study; ``"xavier"`` and ``"kaiming"`` use the uniform Glorot and He (ReLU fan-in) schemes. Biases start at
zero and normalisation layers at weight 1 / bias 0 for every scheme but ``"default"``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["InitName", "NORMAL_STD", "init_weights"]

InitName = Literal["default", "normal", "xavier", "kaiming"]
NORMAL_STD = 0.1

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def init_weights(module: nn.Module, init: InitName = "default") -> nn.Module:
    """Re-initialise every convolution and linear layer of ``module`` in place with scheme ``init``; return it."""
    if init == "default":
        return module
    if init not in ("normal", "xavier", "kaiming"):
        from tumorlab.errors import ConfigError

        raise ConfigError(f"init must be one of default, normal, xavier, kaiming; got {init!r}")
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            if init == "normal":
                nn.init.normal_(m.weight, mean=0.0, std=NORMAL_STD)
            elif init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
