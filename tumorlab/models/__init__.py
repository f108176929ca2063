"""Network architectures as plain ``nn.Module``s with typed constructor arguments (no Lightning inside).

Each has ``num_classes`` and ``in_channels`` attributes; one family per file.
"""

from tumorlab.models.cnn9 import CNN9
from tumorlab.models.init import init_weights
from tumorlab.models.resnet3 import ResNet3
from tumorlab.models.small_cnn import SmallCNN
from tumorlab.models.timm_classifier import TimmClassifier, parameterised_layers
from tumorlab.models.unet import SegClsOutput, UNetWithClassifier

__all__ = [
    "CNN9",
    "ResNet3",
    "SegClsOutput",
    "SmallCNN",
    "TimmClassifier",
    "UNetWithClassifier",
    "init_weights",
    "parameterised_layers",
]
