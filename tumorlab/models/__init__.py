"""Network architectures as plain ``nn.Module``s with typed constructor arguments (no Lightning inside).

One family per file. Every network has ``num_classes`` and ``in_channels`` attributes and the face of
``face.TumorNet`` (after timm): ``forward_features``, ``forward_head(features, pre_logits=False)``,
``reset_classifier(num_classes)``, ``cam_layer``, ``cam_reshape`` and ``preprocessing`` (a ``Preprocessing``).
"""

from tumorlab.models.cnn9 import CNN9
from tumorlab.models.face import TumorNet
from tumorlab.models.init import init_weights
from tumorlab.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from tumorlab.models.resnet3 import ResNet3
from tumorlab.models.small_cnn import SmallCNN
from tumorlab.models.timm_classifier import TimmClassifier, parameterised_layers
from tumorlab.models.unet import SegClsOutput, UNetWithClassifier

__all__ = [
    "CNN9",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "ResNet3",
    "SegClsOutput",
    "SmallCNN",
    "TimmClassifier",
    "TumorNet",
    "UNetWithClassifier",
    "init_weights",
    "parameterised_layers",
]
