"""Models: timm / transformers loading and the CIFAR networks registered in timm.

Importing this package registers ``cifar_resnet20/32/56/110`` and ``cifar_vgg16`` in timm's
registry, so ``timm.create_model("cifar_resnet56", num_classes=10)`` works afterwards. The loader
(which imports transformers' model classes) loads on first use.
"""
from hf_prune._lazy import lazy_getattr

from . import (
    cifar_resnet,  # noqa: F401  (registers the CIFAR ResNets in timm)
    cifar_vgg,  # noqa: F401  (registers the CIFAR VGG in timm)
)

_EXPORTS = {"ImageDataConfig": "loader", "LoadedModel": "loader", "load_model": "loader"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
