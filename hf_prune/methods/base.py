"""The protocol between the PruningTrainer and a pruning method.

A method decides *what* to prune and *when*; the trainer applies the plan physically and
rebuilds optimizer, scheduler and wrappers. Methods never touch those, and keep all their state
on the instance (returned by ``state_dict`` for checkpoints), so two trainers in one process
cannot interfere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import TrainerState, TrainingArguments

from hf_prune.methods._registry import register_method
from hf_prune.structure import CostModel, LatencyModel, MacsModel, StructureGraph, scores_per_cost


@dataclass(frozen=True)
class PruningPlan:
    """Units each named group keeps (groups not named stay whole), and why.

    Attributes:
        keep: unit indices kept, per group name.
        reason: a short description recorded with the prune event.
        recovery_steps: optimizer steps the trainer runs right after the prune, at the current
            learning rate and without advancing the LR schedule or the global step.
        continues: ask the same hook again at once (for searches that prune in several steps
            before training resumes).
        last: the method's last prune (what ``eval_around_prune_events="last"`` evaluates around); a
            multi-step search marks only the step that reaches the target.
    """

    keep: dict[str, list[int]]
    reason: str = ""
    recovery_steps: int = 0
    continues: bool = False
    last: bool = True


@dataclass
class PruningContext:
    """What a method may look at when deciding.

    Attributes:
        model: the unwrapped model being trained.
        graph: its structure now (rebuilt after every prune).
        macs: analytic MACs model of the current structure.
        dense_macs: MACs of the model before any pruning (targets are relative to it).
        args: the run's ``PruningArguments`` (each method reads its own fields).
        state: the Trainer's state (global step, epoch, max steps).
        learning_rate: the optimizer's learning rate now (first parameter group).
        train_dataset: the training set (items are dicts with ``pixel_values`` and ``labels``).
        data_collator: turns a list of items into a batch.
        log: records metrics in the Trainer's logs (``report_to`` carries them).
        example_inputs: the batch the structure was traced with.
        latency: predicted latency of the current structure (with a latency target or profile).
        dense_latency_ms: the dense model's latency as ``latency`` predicts it (targets are relative to it).
        width_multiples: per group, the multiple its kept unit count must be (``round_to``;
            fixed on the dense model, missing groups: 1).
        width_ties: sets of groups that must keep the same unit count (``uniform_widths``).
    """

    model: nn.Module
    graph: StructureGraph
    macs: MacsModel
    dense_macs: int
    args: TrainingArguments
    state: TrainerState
    learning_rate: float
    train_dataset: Dataset | None = field(repr=False)
    data_collator: Callable[[list[Any]], dict[str, Any]] = field(repr=False)
    log: Callable[[dict[str, float]], None] = field(repr=False)
    example_inputs: Any = field(default=None, repr=False)
    latency: LatencyModel | None = field(default=None, repr=False)
    dense_latency_ms: float | None = None
    width_multiples: dict[str, int] = field(default_factory=dict, repr=False)
    width_ties: list[list[str]] = field(default_factory=list, repr=False)

    @property
    def cost(self) -> CostModel:
        """What the target counts: the latency model under ``target_latency_reduction``, else the MACs model."""
        if self.args.target_latency_reduction is None:
            return self.macs
        if self.latency is None:
            raise ValueError("target_latency_reduction is set but the context has no latency model")
        return self.latency

    @property
    def is_pruned(self) -> bool:
        """The model has been pruned already (a run resumed after its prune): target checks are moot."""
        return self.macs.base_macs < self.dense_macs

    @property
    def dense_cost(self) -> float:
        """The dense model's cost in what the target counts: MACs, or predicted latency (ms)."""
        return self.dense_macs if self.args.target_latency_reduction is None else self.dense_latency_ms

    def reduction_from_dense(self) -> float:
        """The fraction of the dense model's cost (what the target counts) the model has shed so far."""
        return 1.0 - self.cost.base_cost / self.dense_cost

    def ranking_scores(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``scores`` as the selection ranks them: per predicted millisecond saved under
        ``latency_aware_ranking`` (:func:`~hf_prune.structure.scores_per_cost`), else unchanged."""
        if not self.args.latency_aware_ranking:
            return scores
        if self.latency is None:
            raise ValueError("latency_aware_ranking is set but the context has no latency model")
        return scores_per_cost(scores, self.graph.groups, self.latency, self.width_multiples)

    @property
    def steps_per_epoch(self) -> float:
        return self.state.max_steps / max(self.state.num_train_epochs, 1)

    def step_in_run(self, epoch: float, setting: str) -> int:
        """The optimizer step at ``epoch`` (at least 1); fails before training when it lies past the run."""
        step = max(1, round(epoch * self.steps_per_epoch))
        if step >= self.state.max_steps:
            raise ValueError(
                f"{setting}={epoch:g} epochs falls at step {step}, but training has only {self.state.max_steps} "
                f"steps: lower {setting} or train longer"
            )
        return step


class PruningMethod:
    """Base class: override the hooks you need; each may return a :class:`PruningPlan`.

    Register a subclass with :func:`~hf_prune.methods.register_method` to make it available as
    ``PruningArguments(pruning_method=name)``. Hooks run with mixed precision off.
    """

    name: ClassVar[str] = ""
    #: ``(title, file name)`` of the plots ``on_train_end`` writes; the model card shows them.
    figures: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: the dataclass of the method's flat ``PruningArguments`` fields, if it has settings
    arguments: ClassVar[type | None] = None
    #: a dense run: the trainer skips every hook (no tracing, no per-step work)
    is_dense: ClassVar[bool] = False
    #: the method's selection honours ``PruningContext.width_ties`` (``uniform_widths``)
    supports_uniform_widths: ClassVar[bool] = True
    #: the method ranks its scores through ``PruningContext.ranking_scores`` (``latency_aware_ranking``)
    supports_latency_aware_ranking: ClassVar[bool] = True

    @classmethod
    def validate_arguments(cls, args: TrainingArguments) -> None:
        """Refuse bad values of the method's own settings on ``args`` with the fix (before training)."""

    def on_train_begin(self, context: PruningContext) -> None:
        """Validate settings against the model (fail before training) and set up state."""

    def on_pre_optimizer_step(self, context: PruningContext) -> None:
        """Gradients are final (synchronized, clipped) and the optimizer is about to step: the
        place for gradient-based regularizers. Must not prune."""

    def on_step_end(self, context: PruningContext) -> PruningPlan | None:
        """After an optimizer step (gradients are zero): the safe point to prune."""
        return None

    def on_epoch_end(self, context: PruningContext) -> PruningPlan | None:
        """After the last step of an epoch."""
        return None

    def on_train_end(self, context: PruningContext) -> None:
        """Training finished: write summaries and plots to ``context.args.output_dir``."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state saved with checkpoints (restored after ``on_train_begin``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@register_method
class NoPruning(PruningMethod):
    """``pruning_method="none"``: train the dense model (the reference every method is compared with)."""

    name = "none"
    is_dense = True
