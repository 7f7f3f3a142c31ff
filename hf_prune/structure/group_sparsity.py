"""Torch-Pruning's own recipe, the outside peer of the benchmarks, behind a narrow adapter.

DepGraph (Fang et al., CVPR 2023) trains with ``GroupNormPruner.regularize`` (a group-norm
sparsity term added to the gradients, strongest on the least important groups) and ranks
channels by ``GroupMagnitudeImportance(p=2)`` (the L2 norm of every coupled tensor slice,
mean-normalized per group). Only those two calls are used; which units go to reach a MACs
target is decided by :func:`~hf_prune.structure.select_lowest`, as for every other method, so
all methods land on the same MACs.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch_pruning as tp

from hf_prune.models.forward import logits_of, run_model
from hf_prune.structure.graph import StructureGraph


class GroupNormSparsity:
    """Torch-Pruning's ``GroupNormPruner`` on the model of ``graph``.

    Args:
        graph: the model's structure now; its fixed layers (grouped convs of unequal widths, user
            ``ignored_layers``, attention of unknown kinds) and the classifiers (their output only, as in
            torch-pruning) are ignored by the pruner too.
        example_inputs: a batch to trace the model with.
        reg: the regularization coefficient (``GroupNormPruner(reg=...)``).
    """

    def __init__(self, graph: StructureGraph, example_inputs: Any, reg: float) -> None:
        self.graph = graph
        self.importance = tp.importance.GroupMagnitudeImportance(p=2)
        was_training = graph.model.training
        graph.model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # unwrapped-parameter notices
                # Fresh dicts: torch-pruning's constructors share mutable defaults between instances.
                self._pruner = tp.pruner.GroupNormPruner(
                    graph.model, example_inputs, importance=self.importance, reg=reg, global_pruning=True,
                    ignored_layers=[*graph.fixed_layers, *graph.classifiers],
                    forward_fn=lambda m, x: logits_of(run_model(m, x)),
                    in_channel_groups={}, out_channel_groups={}, num_heads={}, channel_groups={},
                )
        finally:
            graph.model.train(was_training)

    def add_regularization_gradients(self) -> None:
        """Add the group-sparsity term to the ``.grad`` of every regularized tensor (before the optimizer step)."""
        self._pruner.regularize(self.graph.model)

    def unit_scores(self) -> dict[str, torch.Tensor]:
        """Torch-Pruning's group importance of every unit of every group of ``graph`` (lowest go first)."""
        modules = dict(self.graph.model.named_modules())
        scores = {}
        for group in self.graph.groups:
            root = modules[group.name]
            handler = self._pruner.DG.get_pruner_of_module(root).prune_out_channels
            channels = [i for unit in group._root_indices for i in unit]
            tp_group = self._pruner.DG.get_pruning_group(root, handler, channels)
            per_channel = self.importance(tp_group).detach().float().cpu()
            position = {channel: k for k, channel in enumerate(channels)}
            scores[group.name] = torch.stack(
                [per_channel[[position[i] for i in unit]].mean() for unit in group._root_indices]
            )
        return scores
