"""One-shot magnitude pruning: the baseline the paper methods are measured against."""

from __future__ import annotations

from typing import Any

import torch

from hf_prune.methods._registry import register_method
from hf_prune.methods.base import PruningContext, PruningMethod, PruningPlan
from hf_prune.structure import group_saliencies, select_lowest


@register_method
class MagnitudePruning(PruningMethod):
    """Removes the lowest-norm units of all groups at once, at ``prune_epoch``.

    Units are ranked globally by :func:`~hf_prune.structure.unit_saliency` (fan-normalized
    squared group norm) and removed until the MACs reduction reaches ``target_flops_reduction``
    (or the predicted latency reduction ``target_latency_reduction``), keeping at least ``1 - layer_prune_limit`` of every group.
    """

    name = "magnitude"
    #: where the prune falls when ``prune_epoch`` is unset, as a fraction of the run
    default_prune_fraction = 0.25

    def __init__(self) -> None:
        self.prune_step: int | None = None
        self.done = False

    def on_train_begin(self, context: PruningContext) -> None:
        args = context.args
        epoch = args.prune_epoch if args.prune_epoch is not None else self.default_prune_fraction * context.state.num_train_epochs
        self.prune_step = context.step_in_run(epoch, "prune_epoch")
        if not context.is_pruned:
            self._select(context)  # an unreachable target fails now, not after hours of training

    def on_step_end(self, context: PruningContext) -> PruningPlan | None:
        if self.done or context.state.global_step != self.prune_step:
            return None
        self.done = True
        return PruningPlan(self._select(context).keep, reason=f"one-shot {self.name} at step {self.prune_step}")

    def unit_scores(self, context: PruningContext) -> dict[str, torch.Tensor]:
        """Per-group unit scores; the lowest go first."""
        return group_saliencies(context.model, context.graph.groups)

    def _select(self, context: PruningContext):
        return select_lowest(
            context.graph.groups, context.ranking_scores(self.unit_scores(context)), context.cost,
            context.args.target_reduction, context.args.layer_prune_limit, multiples=context.width_multiples,
            ties=context.width_ties,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"prune_step": self.prune_step, "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prune_step, self.done = state["prune_step"], state["done"]
