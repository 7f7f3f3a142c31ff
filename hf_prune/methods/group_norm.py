"""Torch-Pruning's own recipe as the outside peer: group-sparsity training, then one prune."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hf_prune.methods._registry import register_method
from hf_prune.methods.base import PruningContext
from hf_prune.methods.magnitude import MagnitudePruning
from hf_prune.structure.group_sparsity import GroupNormSparsity


@dataclass
class GroupNormArguments:
    """Settings of ``pruning_method="tp_groupnorm"``."""

    tp_reg: float = field(
        default=5e-4,
        metadata={
            "help": "tp_groupnorm: coefficient of Torch-Pruning's GroupNormPruner regularizer (its CIFAR ResNet "
            "group_sl command uses 5e-4)."
        },
    )


@register_method
class GroupNormPruning(MagnitudePruning):
    """DepGraph's ``group_sl`` recipe (Torch-Pruning's ``GroupNormPruner``) inside the same run.

    Until the prune, every optimizer step first adds ``GroupNormPruner.regularize``'s
    group-sparsity gradients (coefficient ``tp_reg``). At the prune, units are ranked by
    Torch-Pruning's ``GroupMagnitudeImportance(p=2)`` and removed globally to the MACs target
    (per-group floor ``layer_prune_limit``), then training continues on the same schedule.
    Torch-Pruning spends as many epochs on sparsity learning as on fine-tuning, so the prune falls
    at half the run unless ``prune_epoch`` says otherwise.
    """

    name = "tp_groupnorm"
    arguments = GroupNormArguments
    default_prune_fraction = 0.5

    @classmethod
    def validate_arguments(cls, args) -> None:
        if args.tp_reg < 0:
            raise ValueError(f"tp_reg must be >= 0, got {args.tp_reg}")

    def __init__(self) -> None:
        super().__init__()
        self._sparsity: GroupNormSparsity | None = None

    def on_pre_optimizer_step(self, context: PruningContext) -> None:
        if self.done:
            return
        self._group_norm(context).add_regularization_gradients()

    def unit_scores(self, context: PruningContext) -> dict[str, torch.Tensor]:
        return self._group_norm(context).unit_scores()

    def _group_norm(self, context: PruningContext) -> GroupNormSparsity:
        # Built on first use, not in on_train_begin: a run resumed after the prune never needs it.
        if self._sparsity is None:
            self._sparsity = GroupNormSparsity(context.graph, context.example_inputs, context.args.tp_reg)
        return self._sparsity
