"""Layer kinds the structure engine can slice: one entry per layer type, read by every module.

The graph asks which tensors a channel cut slices, masking asks where a layer's output keeps its
channels and whether its statistics mix channels, the shape spec asks which attributes define
its shape, and the MACs model asks whether its cost scales with its channel counts. A new layer
type is one :class:`LayerKind` in :func:`layer_kinds` (the first matching entry wins, so
subclasses come before their base classes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class LayerKind:
    """How one layer type holds channels."""

    module_type: type[nn.Module] | tuple[type[nn.Module], ...]
    sliced_tensors: Callable[[nn.Module, bool], list[tuple[str, int]]]
    """``(attribute, dim)`` of every tensor a channel cut slices, on the producing side
    (``True``: the layer computes the channels) or the consuming side (``False``)."""
    shape_attributes: tuple[str, ...]
    """Attributes that define the layer's shape, recorded in the shape spec."""
    channel_dim: int | None
    """Dimension of the output activation that holds the channels (1: ``(N, C, ...)``, -1:
    channels last); None for elementwise layers, which pass their producer's zeros on."""
    cross_channel: bool = False
    """Its statistics mix channels (LayerNorm, GroupNorm): masking a channel is then inexact."""
    macs_scale_with_widths: bool = False
    """Its MACs are ``out * in * k`` per position: they scale with both channel counts."""
    sync_shape: Callable[[nn.Module], None] | None = None
    """Update shape attributes from the pruned tensors, for layers torch-pruning slices as bare
    parameters (it does not know the layer) while the forward reads a stored shape."""


def is_channel_coupled_conv(conv: nn.modules.conv._ConvNd) -> bool:
    """A grouped convolution whose input and output channels go together, group by group.

    Depthwise convolutions and grouped ones with as many input as output channels per group:
    removing a whole group removes the same positions on both sides, so the group count falls
    and the channels per group stay.
    """
    return conv.groups > 1 and conv.in_channels == conv.out_channels


def _conv_tensors(conv: nn.modules.conv._ConvNd, produces: bool) -> list[tuple[str, int]]:
    output_dim = 1 if conv.transposed else 0
    if produces or is_channel_coupled_conv(conv):
        return [("weight", output_dim), ("bias", 0)]
    return [("weight", 1 - output_dim)]


def _linear_tensors(linear: nn.Module, produces: bool) -> list[tuple[str, int]]:
    return [("weight", 0), ("bias", 0)] if produces else [("weight", 1)]


def _affine_tensors(dim: int) -> Callable[[nn.Module, bool], list[tuple[str, int]]]:
    return lambda norm, produces: [("weight", dim), ("bias", dim)]


def _prelu_tensors(prelu: nn.PReLU, produces: bool) -> list[tuple[str, int]]:
    return [("weight", 0)] if prelu.num_parameters > 1 else []


_TORCH_KINDS: tuple[LayerKind, ...] = (
    LayerKind(nn.modules.conv._ConvNd, _conv_tensors, ("in_channels", "out_channels", "groups"), channel_dim=1,
              macs_scale_with_widths=True),
    LayerKind(nn.Linear, _linear_tensors, ("in_features", "out_features"), channel_dim=-1, macs_scale_with_widths=True),
    LayerKind(nn.modules.batchnorm._BatchNorm, _affine_tensors(0), ("num_features",), channel_dim=1),
    LayerKind(nn.modules.instancenorm._InstanceNorm, _affine_tensors(0), ("num_features",), channel_dim=1),
    LayerKind(nn.GroupNorm, _affine_tensors(0), ("num_channels", "num_groups"), channel_dim=1, cross_channel=True),
    LayerKind(nn.LayerNorm, _affine_tensors(-1), ("normalized_shape",), channel_dim=-1, cross_channel=True),
    LayerKind(nn.PReLU, _prelu_tensors, ("num_parameters",), channel_dim=None),
)


def _gained_conv_tensors(conv: nn.modules.conv._ConvNd, produces: bool) -> list[tuple[str, int]]:
    return [*_conv_tensors(conv, produces), ("gain", 0)] if produces else _conv_tensors(conv, produces)


def _timm_kinds() -> tuple[LayerKind, ...]:
    from timm.layers import MixedConv2d, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
    from timm.models.metaformer import Scale

    def sync_scale(scale: nn.Module) -> None:
        scale.shape = (scale.scale.shape[0], *scale.shape[1:])  # forward: x * scale.view(shape)

    def sync_mixed_conv(mixed: nn.Module) -> None:
        convs = list(mixed.values())  # forward: torch.split(x, splits), one part per conv
        mixed.splits = [conv.in_channels for conv in convs]
        mixed.in_channels, mixed.out_channels = sum(mixed.splits), sum(conv.out_channels for conv in convs)

    conv_attributes = _TORCH_KINDS[0].shape_attributes
    # Weight standardization normalizes each filter over its input channels: a masked input
    # channel still counts in the filter's statistics, as in a norm across channels.
    return (
        LayerKind((ScaledStdConv2d, ScaledStdConv2dSame), _gained_conv_tensors, conv_attributes, channel_dim=1,
                  cross_channel=True, macs_scale_with_widths=True),
        LayerKind((StdConv2d, StdConv2dSame), _conv_tensors, conv_attributes, channel_dim=1, cross_channel=True,
                  macs_scale_with_widths=True),
        LayerKind(Scale, lambda m, produces: [("scale", 0)], ("shape",), channel_dim=None, sync_shape=sync_scale),
        # MixNet: splits its input across its convs by stored sizes; it holds no tensors of its own.
        LayerKind(MixedConv2d, lambda m, produces: [], (), channel_dim=1, sync_shape=sync_mixed_conv),
    )


@functools.cache
def layer_kinds() -> tuple[LayerKind, ...]:
    """Every known kind (built on first use: importing timm is slow); subclasses before their bases."""
    return (*_timm_kinds(), *_TORCH_KINDS)


def layer_kind(module: nn.Module) -> LayerKind | None:
    """The kind of ``module``, or None for a layer the engine cannot slice."""
    return next((kind for kind in layer_kinds() if isinstance(module, kind.module_type)), None)
