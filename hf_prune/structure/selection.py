"""Scoring units and choosing which to remove for a MACs-reduction target."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hf_prune.structure.cost import CostModel
from hf_prune.structure.graph import ChannelGroup


class UnreachableTargetError(ValueError):
    """The MACs-reduction target cannot be met without emptying groups past their floor."""


def unit_saliency(model: nn.Module, group: ChannelGroup, fan_power: float = 1.0) -> torch.Tensor:
    """Norm saliency of each unit of ``group``: shape ``(num_units,)``, float32.

    The mean over the group's weight tensors (biases left out) of the unit's squared norm
    divided by ``fan ** fan_power``, where fan is the number of elements per channel of that
    tensor: 1 (the default) compares wide and narrow layers per weight; OCSPruner's reference
    uses 0.5. 1-D tensors (norm scales) count their squared values as they are.
    """
    return _saliency(dict(model.named_parameters()), group, fan_power)


def group_saliencies(model: nn.Module, groups: Sequence[ChannelGroup], fan_power: float = 1.0) -> dict[str, torch.Tensor]:
    """:func:`unit_saliency` of every group, keyed by group name."""
    params = dict(model.named_parameters())
    return {group.name: _saliency(params, group, fan_power) for group in groups}


def _saliency(params: Mapping[str, torch.Tensor], group: ChannelGroup, fan_power: float) -> torch.Tensor:
    total = torch.zeros(group.num_units)
    count = 0
    for piece in group.slices:
        if piece.param_name.endswith("bias"):
            continue
        weight = params[piece.param_name].detach().float().movedim(piece.dim, 0)
        fan = weight[0].numel()
        rows = weight[piece.index.flatten().to(weight.device)].reshape(group.num_units, -1)
        total += (rows.pow(2).sum(1) / fan**fan_power).cpu()
        count += 1
    return total / max(count, 1)


@dataclass(frozen=True)
class Selection:
    """Which units every group keeps, and the MACs reduction that gives."""

    keep: dict[str, list[int]]
    reduction: float


def min_units_kept(num_units: int, max_prune_ratio: float) -> int:
    """The floor of a group: at least one unit, and at least ``1 - max_prune_ratio`` of them."""
    return max(1, math.ceil(num_units * (1.0 - max_prune_ratio) - 1e-9))


def select_lowest(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    macs_model: CostModel,
    target_reduction: float,
    max_prune_ratio: float,
    tolerance: float = 0.005,
) -> Selection:
    """Remove the globally lowest-scored units until the MACs reduction reaches the target.

    Each group keeps its ``min_units_kept`` best units. The number of removed units is found by
    binary search on the analytic MACs model. When the last unit is a costly one (an attention
    head) and overshoots the target by more than ``tolerance``, the highest-scored of the other
    removed units are given back while the target stays met.

    Raises:
        UnreachableTargetError: even removing every unit above the floors falls short.
    """
    candidates = []
    for g_index, group in enumerate(groups):
        order = torch.argsort(scores[group.name], stable=True).tolist()
        removable = group.num_units - min_units_kept(group.num_units, max_prune_ratio)
        candidates += [(float(scores[group.name][u]), g_index, u) for u in order[:removable]]
    candidates.sort()

    def removed_counts(k: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, g_index, _ in candidates[:k]:
            counts[groups[g_index].name] = counts.get(groups[g_index].name, 0) + 1
        return counts

    best = macs_model.reduction(removed_counts(len(candidates)))
    if best < target_reduction:
        raise UnreachableTargetError(
            f"a MACs reduction of {target_reduction:.1%} is unreachable: keeping at least "
            f"{1 - max_prune_ratio:.0%} of every group allows at most {best:.1%}. Lower "
            "target_flops_reduction or raise layer_prune_limit."
        )
    low, high = 0, len(candidates)
    while low < high:
        mid = (low + high) // 2
        if macs_model.reduction(removed_counts(mid)) >= target_reduction:
            high = mid
        else:
            low = mid + 1
    chosen = candidates[:low]
    if macs_model.reduction(removed_counts(low)) > target_reduction + tolerance:
        chosen = _give_back_surplus(groups, chosen, macs_model, target_reduction, tolerance)
    removed: dict[str, set[int]] = {}
    for _, g_index, unit in chosen:
        removed.setdefault(groups[g_index].name, set()).add(unit)
    keep = {
        g.name: [u for u in range(g.num_units) if u not in removed[g.name]] for g in groups if g.name in removed
    }
    return Selection(keep, macs_model.reduction({name: len(units) for name, units in removed.items()}))


def _give_back_surplus(groups, chosen, macs_model, target, tolerance):
    """Un-remove the highest-scored chosen units while the reduction stays at or above the target."""
    chosen, counts = list(chosen), {}
    for _, g_index, _ in chosen:
        counts[groups[g_index].name] = counts.get(groups[g_index].name, 0) + 1
    for candidate in reversed(chosen[:-1]):  # the last one is what crossed the target
        name = groups[candidate[1]].name
        trial = {**counts, name: counts[name] - 1}
        reduction = macs_model.reduction(trial)
        if reduction < target:
            continue
        chosen.remove(candidate)
        counts = trial
        if reduction <= target + tolerance:
            break
    return chosen
