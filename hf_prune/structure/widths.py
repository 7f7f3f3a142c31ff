"""Hardware-aligned widths: the multiple each group's kept unit count is rounded to.

Convolution and matrix kernels work on blocks of channels: oneDNN's fp32 CPU kernels on 16
channels with AVX-512 (8 with AVX2), CUDA's fp16/bf16 tensor cores on multiples of 8. A pruned
width between two multiples costs about as much as the next multiple up
(``benchmarks/benchmark_conv_widths.py``), so a MACs cut with arbitrary widths buys less speed.
``round_to`` makes every group keep a multiple of its group's *multiple* (or all its units);
the selection rounds, the target is still met.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hf_prune.structure.graph import ChannelGroup

AUTO = "auto"


def parse_round_to(value: str | int) -> int | None:
    """``round_to`` as an int >= 1, or ``None`` for ``"auto"``.

    Raises:
        ValueError: neither ``"auto"`` nor a whole number >= 1.
    """
    text = str(value).strip().lower()
    if text == AUTO:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"round_to must be 'auto' or a whole number >= 1 (1 keeps arbitrary widths), got {value!r}"
        )
    return int(text)


def device_block(device: torch.device | str) -> int:
    """Channels per kernel block on ``device``: 16 on an AVX-512 CPU, else 8 (AVX2 CPU, CUDA tensor cores)."""
    if torch.device(device).type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return 16
    return 8


def auto_channel_multiple(width: int, block: int, convolution: bool = True) -> int:
    """The ``"auto"`` multiple (in channels) of a group ``width`` channels wide.

    The device's block, but at most the largest power of two <= ``width / 2`` for convolution
    channels at least two blocks wide, so that such a group (a 16-channel CIFAR stage on AVX2: 8)
    can still be halved: oneDNN pads a convolution's channels to its block, so 4 or 12 of 16
    channels run no faster than 8 or 16 (``benchmarks/benchmark_conv_widths.py``). Narrower
    convolutions and other groups (linear layers, whose GEMMs showed no such padding) keep the
    finer cap of ``width / 4``, so they can lose a quarter.
    """
    halvable = convolution and width >= 2 * block
    return max(1, min(block, 2 ** int(math.log2(max(width // (2 if halvable else 4), 1)))))


def produces_convolution_channels(group: ChannelGroup, model: nn.Module) -> bool:
    """Every tensor computing the group's channels is a convolution weight or a per-channel vector,
    and at least one is a convolution weight."""
    shapes = [model.get_parameter(piece.param_name).dim() for piece in group.slices if piece.produces]
    return any(dims >= 3 for dims in shapes) and all(dims != 2 for dims in shapes)


def channels_per_unit(group: ChannelGroup) -> int:
    """Channels one unit holds (1; more for whole groups of a grouped convolution or GroupNorm)."""
    return min(piece.index.shape[1] for piece in group.slices if piece.produces)


def width_multiples(
    groups: Sequence[ChannelGroup], round_to: str | int, device: torch.device | str, model: nn.Module
) -> dict[str, int]:
    """Per group, the multiple (in units) its kept unit count is rounded to.

    Attention heads are whole units already: head groups get 1. A channel group gets ``round_to``
    channels, or with ``"auto"`` :func:`auto_channel_multiple` of the device's
    :func:`device_block`, converted to units (a unit of 4 channels with a multiple of 8 channels: 2).
    ``model`` (the groups' model) tells convolution channels from others.
    """
    fixed = parse_round_to(round_to)
    multiples = {}
    for group in groups:
        if group.kind == "head":
            multiples[group.name] = 1
            continue
        per_unit = channels_per_unit(group)
        channels = fixed or auto_channel_multiple(
            group.num_units * per_unit, device_block(device), produces_convolution_channels(group, model)
        )
        multiples[group.name] = channels // math.gcd(channels, per_unit)
    return multiples


def repeated_block_ties(groups: Sequence[ChannelGroup]) -> list[list[str]]:
    """Groups at the same place of repeated blocks, which ``uniform_widths`` keeps equally wide.

    Two groups are tied when their names differ only in numeric path components (the indices of
    a ``ModuleList`` or ``Sequential`` of blocks: ``encoder.layer.0.intermediate.dense`` and
    ``encoder.layer.1.intermediate.dense``) and they have the same kind and unit count.
    """
    places: dict[tuple[str, str, int], list[str]] = {}
    for group in groups:
        place = ".".join("*" if part.isdigit() else part for part in group.name.split("."))
        places.setdefault((place, group.kind, group.num_units), []).append(group.name)
    return [names for names in places.values() if len(names) > 1]


def aligned_floor(num_units: int, floor: int, multiple: int) -> int:
    """The fewest units a group may keep: ``floor`` rounded up to the multiple, at most all of them."""
    return min(num_units, math.ceil(floor / multiple) * multiple)


def aligned_removal(num_units: int, removed: int, multiple: int) -> int:
    """``removed`` units moved to the nearest removal that leaves a multiple (or all units) kept.

    Ties remove more. Monotone in ``removed``; the caller keeps ``removed`` at most
    ``num_units - aligned_floor(...)``, so the result stays above the floor.
    """
    if removed <= 0:
        return 0
    kept = num_units - removed
    lower = kept // multiple * multiple
    upper = min(lower + multiple, num_units)
    return num_units - (upper if upper - kept < kept - lower else lower)


__all__ = [
    "AUTO",
    "aligned_floor",
    "aligned_removal",
    "auto_channel_multiple",
    "channels_per_unit",
    "device_block",
    "parse_round_to",
    "produces_convolution_channels",
    "repeated_block_ties",
    "width_multiples",
]
