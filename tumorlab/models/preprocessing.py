"""The input normalisation a network declares: RGB mean/std, a fixed input side, and where the numbers come from.

Pretrained weights only work on inputs normalised the way they were trained (timm's ``pretrained_cfg``, smp's
encoder settings); networks trained from scratch here use the ImageNet statistics by convention. Every network's
``preprocessing`` property returns a ``Preprocessing``, so the data layer can take the numbers from the model
instead of repeating them in a config.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FROM_SCRATCH", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FROM_SCRATCH = "ImageNet statistics (network trained from scratch)"


@dataclass(frozen=True)
class Preprocessing:
    """How to normalise a network's input: ``(x - mean) / std`` per channel, on pixel values scaled to [0, 1].

    Args:
        mean: mean of the three RGB source channels; the data layer picks the entries of the channels it feeds
            (e.g. the first for a grey image).
        std: standard deviation of the three RGB source channels (all > 0).
        image_size: the square input side in pixels the network is fixed to; ``None`` when any size works.
        source: where the numbers come from, in words (e.g. ``timm pretrained_cfg of resnet18.a1_in1k``).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int | None
    source: str

    def __post_init__(self) -> None:
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"Preprocessing needs three RGB means and stds, got mean={mean}, std={std}")
        if min(std) <= 0:
            raise ValueError(f"Preprocessing std must be positive, got {std}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"Preprocessing image_size must be positive or None, got {self.image_size}")
        # Frozen: store the normalised tuples (timm and smp hand out lists or tuples of mixed types).
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def imagenet(cls, source: str = FROM_SCRATCH, image_size: int | None = None) -> Preprocessing:
        """The ImageNet statistics, with ``source`` saying why they are used."""
        return cls(IMAGENET_MEAN, IMAGENET_STD, image_size, source)

    @classmethod
    def from_stats(
        cls, mean: object, std: object, source: str, fallback: str, image_size: int | None = None
    ) -> Preprocessing:
        """``mean``/``std`` from a library's config, or ImageNet when they are missing or not 3-channel.

        ``fallback`` is the ``source`` text for the ImageNet case; it should say why the library's numbers
        were not used.
        """
        if _three_numbers(mean) and _three_numbers(std):
            return cls(tuple(mean), tuple(std), image_size, source)  # type: ignore[arg-type]
        return cls.imagenet(fallback, image_size)


def _three_numbers(values: object) -> bool:
    return (
        isinstance(values, (list, tuple))
        and len(values) == 3
        and all(isinstance(v, (int, float)) for v in values)
        and min(values) >= 0
    )
