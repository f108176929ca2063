"""Joint image/mask transforms built with albumentations.

Training pipelines augment; validation, test and prediction pipelines only resize and normalise.
"""

from __future__ import annotations

import albumentations as A
from albumentations.pytorch import ToTensorV2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transforms"]

# smp and timm encoders expect ImageNet statistics, pretrained or not.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(image_size: int, train: bool, hflip: float = 0.5, vflip: float = 0.0) -> A.Compose:
    """Resize to ``image_size``², augment when ``train``, normalise, and convert to CHW tensors.

    Masks are resized with nearest-neighbour interpolation, so they stay binary.
    """
    steps: list = [A.Resize(image_size, image_size)]
    if train:
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if vflip > 0:
            steps.append(A.VerticalFlip(p=vflip))
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(steps)
