"""The W&B logger every tumorlab run uses by default."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger"]


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` (same arguments), without W&B's warning about the ``anonymous`` setting.

    Lightning 2.6 always hands ``anonymous`` to ``wandb.init`` (``None`` unless asked for), and W&B 0.2x warns
    on every run that the setting has no effect. The key is dropped when it is ``None``; nothing else changes.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning keeps wandb.init's arguments here
            self._wandb_init.pop("anonymous", None)
