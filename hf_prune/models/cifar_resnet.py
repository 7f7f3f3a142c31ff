"""ResNet for CIFAR (32x32 inputs), registered as timm models.

The 6n+2 ResNets of He et al. (ResNet-20/32/56/110): a 3x3 stem conv with 16 channels, three
stages of n BasicBlocks with 16/32/64 channels, global average pooling and a Linear classifier.

Unlike the paper's "option A" (zero-padded identity) shortcut, each stage transition uses a
1x1 conv + BN projection ("option B"). Every conv then has parameters, so every channel of the
network belongs to a prunable group; this costs ~0.26M MACs on ResNet-56 (125.75M in total).

Paper: `Deep Residual Learning for Image Recognition` - https://arxiv.org/abs/1512.03385
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

__all__ = ["CifarResNet", "BasicBlock"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection (projected when the shape changes)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, device=None, dtype=None) -> None:
        """Initialize the block.

        Args:
            in_chs: Input channels.
            out_chs: Output channels.
            stride: Stride of the first conv (2 at a stage transition).
            device: Factory device of the parameters.
            dtype: Factory dtype of the parameters.
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd),
                nn.BatchNorm2d(out_chs, **dd),
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass."""
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet with 3 stages of BasicBlocks, following timm's model interface."""

    def __init__(
            self,
            depth: int = 56,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            widths: tuple[int, int, int] = (16, 32, 64),
            device=None,
            dtype=None,
    ) -> None:
        """Initialize the network.

        Args:
            depth: Total depth 6n+2 (20, 32, 56, 110, ...); n blocks per stage.
            num_classes: Number of classifier outputs (0 for no classifier).
            in_chans: Number of input image channels.
            global_pool: timm global pooling type.
            drop_rate: Dropout rate before the classifier.
            widths: Channels of the three stages (the stem has widths[0]).
            device: Factory device of the parameters.
            dtype: Factory dtype of the parameters.
        """
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        dd = {"device": device, "dtype": dtype}
        blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(widths[0], **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=widths[0], reduction=1, module="act1")]
        in_chs = widths[0]
        for stage_idx, out_chs in enumerate(widths):
            stride = 1 if stage_idx == 0 else 2
            blocks = [BasicBlock(in_chs, out_chs, stride=stride, **dd)]
            blocks += [BasicBlock(out_chs, out_chs, **dd) for _ in range(blocks_per_stage - 1)]
            self.add_module(f"layer{stage_idx + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=out_chs, reduction=2 ** stage_idx, module=f"layer{stage_idx + 1}"))
            in_chs = out_chs

        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(in_chs, num_classes, pool_type=global_pool, **dd)
        _init_weights(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm interface)."""
        blocks = r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"
        return dict(stem=r"^conv1|^bn1", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Enable or disable activation checkpointing of the stages."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """Return the classifier layer."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier with a new one for `num_classes` outputs (0 removes it)."""
        self.num_classes = num_classes
        dd = {"device": self.conv1.weight.device, "dtype": self.conv1.weight.dtype}
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the three stages: (B, C, 32, 32) -> (B, 64, 8, 8)."""
        x = self.act1(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3):
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
        return x

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
    """Kaiming-normal convs (fan_out, as in torchvision's ResNet), unit BN, default Linear init."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _create_cifar_resnet(variant: str, depth: int, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Build a CIFAR ResNet of `depth` through timm's builder (pretrained cfg, kwargs defaults)."""
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        depth=depth,
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """Default (weightless) pretrained cfg of the CIFAR ResNets."""
    return {
        "url": "",
        "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8),
        "crop_pct": 1.0, "interpolation": "bilinear",
        "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
        "first_conv": "conv1", "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "cifar_resnet20": _cfg(),
    "cifar_resnet32": _cfg(),
    "cifar_resnet56": _cfg(),
    "cifar_resnet110": _cfg(),
})


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (3 blocks per stage, ~41M MACs at 32x32)."""
    return _create_cifar_resnet("cifar_resnet20", 20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (5 blocks per stage, ~70M MACs at 32x32)."""
    return _create_cifar_resnet("cifar_resnet32", 32, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (9 blocks per stage, ~126M MACs at 32x32)."""
    return _create_cifar_resnet("cifar_resnet56", 56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (18 blocks per stage, ~253M MACs at 32x32)."""
    return _create_cifar_resnet("cifar_resnet110", 110, pretrained, **kwargs)
