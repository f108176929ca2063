"""Network architectures as plain ``nn.Module``s with typed constructor arguments (no Lightning inside)."""

from tumorlab.models.unet import SegClsOutput, UNetWithClassifier

__all__ = ["SegClsOutput", "UNetWithClassifier"]
