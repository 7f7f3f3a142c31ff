"""Scoring units and choosing which to remove for a MACs-reduction target."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hf_prune.structure.cost import CostModel
from hf_prune.structure.graph import ChannelGroup
from hf_prune.structure.widths import aligned_floor, aligned_removal

# How far past the target a selection may land (a fraction of the dense cost) before it gives units back.
TARGET_TOLERANCE = 0.005


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


def scores_per_cost(
    scores: Mapping[str, torch.Tensor], groups: Sequence[ChannelGroup], cost: CostModel,
    multiples: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Each group's unit scores divided by the cost one of its units saves now.

    The saving is that of removing one multiple of the group (``multiples``, default 1) divided by
    the multiple: with a :class:`~hf_prune.structure.LatencyModel` the milliseconds a unit is worth,
    so that ranking the quotients removes the units that cost the most time for their saliency
    (a greedy knapsack, as HALP does with latency tables). A group whose removal saves nothing
    (or less, in a noisy table) counts a saving of a millionth of the model's cost: its units go last.
    """
    floor = 1e-6 * cost.base_cost
    per_unit = {}
    for group in groups:
        multiple = min((multiples or {}).get(group.name, 1), group.num_units)
        per_unit[group.name] = max((cost.base_cost - cost.cost({group.name: multiple})) / multiple, floor)
    return {name: values / per_unit[name] for name, values in scores.items()}


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
    tolerance: float = TARGET_TOLERANCE,
    multiples: Mapping[str, int] | None = None,
    ties: Sequence[Sequence[str]] = (),
) -> Selection:
    """Remove the globally lowest-scored units until the MACs reduction reaches the target.

    Each group keeps its ``min_units_kept`` best units. The number of removed units is found by
    binary search on the analytic MACs model. When the last unit is a costly one (an attention
    head, or a whole multiple) and overshoots the target by more than ``tolerance``, the
    highest-scored of the other removed units are given back (a multiple at a time) while the
    target stays met. If a rounded group's block still overshoots, that block is left and the
    search goes on with lower-ranked units of the other groups; the closest result is kept.

    Args:
        multiples: per group, the multiple its kept unit count is rounded to (to the nearest
            one, floor rounded up; keeping all units is always allowed). Missing groups: 1.
        ties: sets of groups (with equal unit counts) that must keep the same count: the r-th
            lowest unit of the set scores the mean of its members' r-th lowest scores, and
            the set loses its units together.

    Raises:
        UnreachableTargetError: even removing every unit above the floors falls short.
    """
    stacks = _stacks(groups, scores, max_prune_ratio, multiples or {}, ties)
    pool = sorted(
        (score, s_index, rank) for s_index, stack in enumerate(stacks) for rank, score in enumerate(stack.rank_scores)
    )

    def removed_counts(k: int) -> dict[int, int]:
        raw = Counter(s_index for _, s_index, _ in pool[:k])
        return {s: aligned_removal(stacks[s].num_units, n, stacks[s].multiple) for s, n in raw.items()}

    def reduction(counts: Mapping[int, int]) -> float:
        return macs_model.reduction({name: n for s, n in counts.items() for name in stacks[s].names})

    best = reduction(removed_counts(len(pool)))
    if best < target_reduction:
        rounding = " with widths rounded to multiples (round_to)" if any(s.multiple > 1 for s in stacks) else ""
        raise UnreachableTargetError(
            f"a MACs reduction of {target_reduction:.1%} is unreachable: keeping at least "
            f"{1 - max_prune_ratio:.0%} of every group{rounding} allows at most {best:.1%}. Lower "
            "target_flops_reduction or raise layer_prune_limit."
        )
    chosen: dict[int, int] | None = None
    for _ in range(len(stacks)):
        low, high = 0, len(pool)
        while low < high:
            mid = (low + high) // 2
            if reduction(removed_counts(mid)) >= target_reduction:
                high = mid
            else:
                low = mid + 1
        counts = removed_counts(low)
        if reduction(counts) > target_reduction + tolerance:
            counts = _give_back_surplus(stacks, counts, reduction, target_reduction, tolerance)
        if chosen is None or reduction(counts) < reduction(chosen):
            chosen = counts
        crossing = pool[low - 1][1]
        if reduction(chosen) <= target_reduction + tolerance or stacks[crossing].multiple == 1:
            break
        # A rounded group's block overshot: leave that block, take lower-ranked units of other groups instead.
        kept_ranks = sum(1 for _, s_index, _ in pool[: low - 1] if s_index == crossing)
        pool = [c for c in pool if c[1] != crossing or c[2] < kept_ranks]
        if reduction(removed_counts(len(pool))) < target_reduction:
            break
    keep = {
        name: sorted(order[count:])
        for s_index, count in chosen.items() if count
        for name, order in zip(stacks[s_index].names, stacks[s_index].orders)
    }
    return Selection(keep, reduction(chosen))


@dataclass(frozen=True)
class _Stack:
    """Groups that keep the same number of units (one group, or a tied set), ranked together."""

    names: tuple[str, ...]
    orders: tuple[list[int], ...]  # per member: its units, lowest score first
    num_units: int
    multiple: int
    rank_scores: list[float]  # score of removing the r-th lowest units, for the removable ranks


def _stacks(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    max_prune_ratio: float,
    multiples: Mapping[str, int],
    ties: Sequence[Sequence[str]],
) -> list[_Stack]:
    """One stack per tied set (at the place of its first member) and per untied group, in model order."""
    by_name = {g.name: g for g in groups}
    tie_of = {name: tuple(tie) for tie in ties for name in tie}
    stacks, seen = [], set()
    for group in groups:
        names = tie_of.get(group.name, (group.name,))
        if names in seen:
            continue
        seen.add(names)
        members = [by_name[n] for n in names]
        units = {m.num_units for m in members}
        if len(units) != 1:
            raise ValueError(
                f"tied groups {list(names)} have unequal unit counts {sorted(units)}: they cannot keep equal ones"
            )
        num_units = members[0].num_units
        multiple = max(multiples.get(n, 1) for n in names)
        floor = aligned_floor(num_units, min_units_kept(num_units, max_prune_ratio), multiple)
        sorted_scores = [torch.sort(scores[n].double(), stable=True) for n in names]
        ranked = torch.stack([values for values, _ in sorted_scores]).mean(0)
        stacks.append(_Stack(
            names, tuple(indices.tolist() for _, indices in sorted_scores), num_units, multiple,
            ranked[: num_units - floor].tolist(),
        ))
    return stacks


def _give_back_surplus(stacks, counts, reduction, target, tolerance):
    """Un-remove the highest-scored removed units, a multiple at a time, while the target stays met.

    The stack whose highest removed unit scores highest goes first; a stack whose give-back
    would miss the target is done (giving back others only lowers the reduction further).
    """
    counts, open_stacks = dict(counts), {s for s, n in counts.items() if n > 0}
    while open_stacks:
        s_index = max(open_stacks, key=lambda s: (stacks[s].rank_scores[counts[s] - 1], s))
        stack = stacks[s_index]
        kept = stack.num_units - counts[s_index]
        removal = stack.num_units - min(stack.num_units, (kept // stack.multiple + 1) * stack.multiple)
        trial = {**counts, s_index: removal}
        achieved = reduction(trial)
        if achieved < target:
            open_stacks.discard(s_index)
            continue
        counts = trial
        if removal == 0:
            open_stacks.discard(s_index)
        if achieved <= target + tolerance:
            break
    return counts
