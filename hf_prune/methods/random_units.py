"""One-shot pruning of random units: the baseline any saliency criterion has to beat."""

from __future__ import annotations

import torch

from hf_prune.methods._registry import register_method
from hf_prune.methods.base import PruningContext
from hf_prune.methods.magnitude import MagnitudePruning


@register_method
class RandomPruning(MagnitudePruning):
    """Like ``magnitude`` (same prune point, global ranking to the MACs target, per-group floor),
    but the units' scores are uniform random numbers drawn from a generator seeded by ``args.seed``:
    the same seed prunes the same units on every rank and every run.
    """

    name = "random"

    def unit_scores(self, context: PruningContext) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(context.args.seed)
        return {group.name: torch.rand(group.num_units, generator=generator) for group in context.graph.groups}
