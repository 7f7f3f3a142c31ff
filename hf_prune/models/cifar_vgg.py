"""VGG with BatchNorm for CIFAR (32x32 inputs), registered as a timm model.

The CIFAR variant used throughout the channel-pruning literature (Network Slimming, DepGraph):
the 13 conv layers of VGG-16, each 3x3 conv + BN + ReLU, four 2x2 max-pools (32 -> 2 px), then
global average pooling and a single Linear 512 -> num_classes named `fc`. The ImageNet model's
two 4096-wide hidden Linear layers are dropped, as in those papers.

Paper: `Very Deep Convolutional Networks for Large-Scale Image Recognition` - https://arxiv.org/abs/1409.1556
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .cifar_resnet import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["CifarVGG"]

CFGS: dict[str, list[str | int]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


class CifarVGG(nn.Module):
    """VGG-BN feature extractor with a global-pool + Linear head, following timm's model interface."""

    def __init__(
            self,
            cfg: Sequence[str | int] = tuple(CFGS["vgg16"]),
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            device=None,
            dtype=None,
    ) -> None:
        """Initialize the network.

        Args:
            cfg: Conv output widths, with "M" for a 2x2 max-pool.
            num_classes: Number of classifier outputs (0 for no classifier).
            in_chans: Number of input image channels.
            global_pool: timm global pooling type.
            drop_rate: Dropout rate before the classifier.
            device: Factory device of the parameters.
            dtype: Factory dtype of the parameters.
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.feature_info: list[dict[str, Any]] = []
        layers: list[nn.Module] = []
        in_chs, reduction = in_chans, 1
        for value in cfg:
            if value == "M":
                # Record the last activation before each downsampling as a feature level.
                last = f"features.{len(layers) - 1}"
                self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=last))
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
                continue
            layers += [
                nn.Conv2d(in_chs, int(value), 3, padding=1, bias=False, **dd),
                nn.BatchNorm2d(int(value), **dd),
                nn.ReLU(inplace=True),
            ]
            in_chs = int(value)
        self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)

        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(in_chs, num_classes, pool_type=global_pool, **dd)
        _init_weights(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm interface)."""
        return dict(stem=r"^features\.0", blocks=r"^features\.(\d+)")

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """Return the classifier layer."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier with a new one for `num_classes` outputs (0 removes it)."""
        self.num_classes = num_classes
        weight = self.features[0].weight
        dd = {"device": weight.device, "dtype": weight.dtype}
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv stack: (B, C, 32, 32) -> (B, 512, 2, 2)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify (or return pooled features when `pre_logits`)."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass: logits of shape (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out), unit BN, small normal Linear (as torchvision's VGG)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """Default (weightless) pretrained cfg of the CIFAR VGGs."""
    return {
        "url": "",
        "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (2, 2),
        "crop_pct": 1.0, "interpolation": "bilinear",
        "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
        "first_conv": "features.0", "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "cifar_vgg16": _cfg(),
})


@register_model
def cifar_vgg16(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-16 with BN for CIFAR (13 convs, ~313M MACs at 32x32)."""
    return build_model_with_cfg(
        CifarVGG,
        "cifar_vgg16",
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4)),
        cfg=tuple(CFGS["vgg16"]),
        **kwargs,
    )
