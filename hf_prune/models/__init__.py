"""Models: timm / transformers loading and the CIFAR networks registered in timm.

Importing this package registers ``cifar_resnet20/32/56/110`` and ``cifar_vgg16`` in timm's
registry, so ``timm.create_model("cifar_resnet56", num_classes=10)`` works afterwards.
"""
from . import (
    cifar_resnet,  # noqa: F401  (registers the CIFAR ResNets in timm)
    cifar_vgg,  # noqa: F401  (registers the CIFAR VGG in timm)
)
from .loader import ImageDataConfig, LoadedModel, load_model

__all__ = ["ImageDataConfig", "LoadedModel", "load_model"]
