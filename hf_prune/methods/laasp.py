"""LAASP: loss-aware automatic selection of structured pruning criteria (Ghimire et al., 2023).

After training densely for a while, the search removes about ``laasp_flops_step`` of the dense
MACs per step. Each step tries every (group, criterion) pair: the criterion picks which units of
the group would go, and the candidate is scored by the training loss of the model without them
on a small frozen subset. The pair with the lowest loss is pruned; short recovery training runs
every ``laasp_recover_flops`` of reduction; steps repeat until ``target_flops_reduction``.

Unlike the reference, candidates are not evaluated on pruned copies of the model: their units
are masked to zero at the output of the modules producing them (exactly the same loss in eval
mode), the part of the forward before a group's first module is computed once per batch and
replayed, coupled layers are one candidate (a residual group is scored once, not once per conv),
and criteria that choose the same units share one evaluation.

The search can be lazy (``laasp_rescore_top > 0``): a step removes about 1 % of the MACs, so
the first step scores every candidate and later steps re-score only the leaders of the ranking
so far (by loss increase over the unpruned model), the candidates of the group pruned last and
any never scored. ``laasp_audit`` runs the full search next to the chosen one to measure their
agreement. A screening pass (``laasp_screen_fraction``) scores candidates on a fraction of the
subset first and only the best few go on; with ``laasp_race`` those are scored batch by batch and
dropped once clearly behind the leader.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from hf_prune.methods._registry import register_method
from hf_prune.methods.subset_loss import MaskedCandidate, SubsetLoss, build_loss_subset
from hf_prune.methods.base import PruningContext, PruningMethod, PruningPlan
from hf_prune.methods.criteria import get_criterion, unit_weights
from hf_prune.plots import plot_panels
from hf_prune.structure import (
    ChannelGroup,
    TARGET_TOLERANCE,
    PrefixCache,
    UnreachableTargetError,
    masking_is_exact,
    min_units_kept,
    unit_output_masks,
)
from hf_prune.structure.widths import aligned_floor

logger = logging.get_logger(__name__)

SEARCH_PLOT_NAME = "laasp_search.png"


@dataclass(frozen=True)
class Candidate:
    """Removing ``removed`` units of group ``group``.

    ``criteria`` lists every criterion (in ``laasp_criteria`` order) that selects exactly these
    units; they share one evaluation and the first one is credited when it wins.
    """

    group: str
    criteria: tuple[str, ...]
    removed: tuple[int, ...]


@dataclass
class LAASPArguments:
    """Settings of ``pruning_method="laasp"``."""

    laasp_prune_start: float | None = field(
        default=None,
        metadata={
            "help": "LAASP: epoch (fractions allowed) at which the search starts. Default: 0.3 of the run "
            "(the reference prunes at epoch 60 of 200)."
        },
    )
    laasp_flops_step: float = field(
        default=0.01,
        metadata={
            "help": "LAASP: fraction of the dense MACs one search step removes: each group's step size (units) is "
            "fixed once on the dense model, as in the reference."
        },
    )
    laasp_criteria: list[str] = field(
        default_factory=lambda: ["l1", "l2", "fpgm", "cosine"],
        metadata={
            "help": "LAASP: filter criteria to choose from each step (hf_prune.methods.CRITERIA; add your own "
            "with hf_prune.methods.register_criterion)."
        },
    )
    laasp_subset_size: int = field(
        default=512,
        metadata={"help": "LAASP: training images (stratified, augmented once) on which candidates are scored."},
    )
    laasp_batch_size: int = field(
        default=32,
        metadata={"help": "LAASP: images per forward when scoring candidates (per device); the unit of screening and race."},
    )
    laasp_recover_flops: float = field(
        default=0.05,
        metadata={"help": "LAASP: run recovery training each time the MACs reduction grew by this much."},
    )
    laasp_recovery_epochs: float = field(
        default=0.1,
        metadata={
            "help": "LAASP: length of one recovery, in epochs (converted to optimizer steps at the frozen "
            "current LR; the LR schedule does not move)."
        },
    )
    laasp_rescore_top: int = field(
        default=0,
        metadata={
            "help": "LAASP: lazy search: after the first step re-score only this many leaders of the ranking so far "
            "(loss increase over the unpruned model), plus the candidates of the group pruned last and any never "
            "scored. 0 (the default) scores every candidate at every step, as the reference. Measured with 3 on "
            "cifar_resnet20: 4.6x cheaper than scoring every candidate, but the same pick in only 5 of 63 steps."
        },
    )
    laasp_audit: bool = field(
        default=False,
        metadata={
            "help": "LAASP: also run the exhaustive search at every step (without acting on it) and record in the "
            "history whether it picks the same (group, units): measures the lazy search, at the exhaustive cost."
        },
    )
    laasp_screen_fraction: float = field(
        default=0.0625,
        metadata={
            "help": "LAASP: score all candidates on this leading fraction of the subset first and only the best "
            "laasp_screen_keep on all of it; 0 scores every candidate on the whole subset."
        },
    )
    laasp_screen_keep: int = field(
        default=8, metadata={"help": "LAASP: candidates that pass the screening pass to the whole subset."}
    )
    laasp_race: float = field(
        default=2.0,
        metadata={
            "help": "LAASP: score the candidates left after screening batch by batch and drop one once its loss "
            "trails the leader's by more than this many standard errors of their per-batch differences (from the "
            "third batch on); stops when one is left. 0 scores them all on the whole subset."
        },
    )


@register_method
class LAASPPruning(PruningMethod):
    """Loss-aware selection of a (group, criterion) pair per step, from ``laasp_prune_start`` on.

    Settings are the ``laasp_*`` fields of :class:`~hf_prune.PruningArguments`, plus
    ``target_flops_reduction`` (or ``target_latency_reduction``: steps go on until the predicted
    latency reduction reaches it; step sizes stay in MACs) and ``layer_prune_limit`` (every group
    keeps at least ``1 - layer_prune_limit`` of its dense units; a group at that floor is no candidate).
    """

    name = "laasp"
    arguments = LAASPArguments
    figures = (("LAASP search", SEARCH_PLOT_NAME),)
    supports_uniform_widths = False  # one group per step
    supports_latency_aware_ranking = False  # it ranks candidates by subset loss, not unit scores

    @classmethod
    def validate_arguments(cls, args) -> None:
        if args.laasp_prune_start is not None and not args.laasp_prune_start >= 0:  # NaN fails too
            raise ValueError(f"laasp_prune_start must be >= 0 epochs (or None for 0.3 of the run), got {args.laasp_prune_start}")
        for name in ("laasp_flops_step", "laasp_recover_flops"):
            if not 0.0 < getattr(args, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1) (a fraction of the dense MACs), got {getattr(args, name)}")
        if not args.laasp_criteria or len(set(args.laasp_criteria)) != len(args.laasp_criteria):
            raise ValueError(f"laasp_criteria must name at least one criterion, each once; got {args.laasp_criteria}")
        for name in ("laasp_subset_size", "laasp_batch_size", "laasp_screen_keep"):
            if getattr(args, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(args, name)}")
        if not args.laasp_race >= 0:  # NaN fails too
            raise ValueError(f"laasp_race must be >= 0 standard errors (0 turns racing off), got {args.laasp_race}")
        if args.laasp_rescore_top < 0:
            raise ValueError(f"laasp_rescore_top must be >= 0 (0 re-scores every candidate), got {args.laasp_rescore_top}")
        if args.laasp_recovery_epochs < 0:
            raise ValueError(f"laasp_recovery_epochs must be >= 0 (0 turns recovery off), got {args.laasp_recovery_epochs}")
        if not 0.0 <= args.laasp_screen_fraction < 1.0:
            raise ValueError(
                f"laasp_screen_fraction must lie in [0, 1) (0 turns screening off), got {args.laasp_screen_fraction}"
            )

    def __init__(self) -> None:
        self.prune_step: int | None = None
        self.phase = "waiting"  # -> "search" -> "done"
        self.history: list[dict[str, Any]] = []
        self.last_recovery_reduction = 0.0
        self.dense_units: dict[str, int] = {}
        self.step_sizes: dict[str, int] = {}
        self.loss_increase: dict[str, float] = {}  # "group/criterion" -> last scored loss increase
        self._recovery_steps = 0
        self._subset: list[dict[str, torch.Tensor]] | None = None
        self._bar: tqdm | None = None

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, context: PruningContext) -> None:
        args = context.args
        start = args.laasp_prune_start if args.laasp_prune_start is not None else 0.3 * context.state.num_train_epochs
        self.prune_step = context.step_in_run(start, "laasp_prune_start")
        for criterion in args.laasp_criteria:
            get_criterion(criterion)  # an unknown name fails now, not at the prune epoch
        self.dense_units = {g.name: g.num_units for g in context.graph.groups}
        self.step_sizes = self.dense_step_sizes(context)
        self._recovery_steps = self._steps_per_recovery(context)
        inexact = [g.name for g in context.graph.groups if not masking_is_exact(context.model, g)]
        if inexact:
            logger.warning(
                f"LAASP: groups {inexact} are normalized across channels (LayerNorm/GroupNorm); their masked "
                "candidate losses approximate the loss after a real prune"
            )
        if not context.is_pruned:  # a resumed, pruned run was checked when it started
            self._check_reachable(context)

    def on_step_end(self, context: PruningContext) -> PruningPlan | None:
        if self.phase == "waiting" and context.state.global_step >= self.prune_step:
            self.phase = "search"
        return self._search_step(context) if self.phase == "search" else None

    def on_train_end(self, context: PruningContext) -> None:
        usage = Counter(step["criterion"] for step in self.history)
        context.log({f"pruning/laasp_uses_{c}": float(usage[c]) for c in context.args.laasp_criteria})
        if not context.args.should_save:
            return
        if not self.history:
            logger.warning(f"{SEARCH_PLOT_NAME} not written: no search step ran (the run ended before laasp_prune_start).")
            return
        steps = range(1, len(self.history) + 1)
        plot_panels(
            {
                "subset loss": {"loss of the chosen candidate": [(i, s["loss"]) for i, s in zip(steps, self.history)]},
                "MACs reduction (%)": {"after the step": [(i, 100 * s["reduction"]) for i, s in zip(steps, self.history)]},
            },
            os.path.join(context.args.output_dir, SEARCH_PLOT_NAME), xlabel="LAASP step", title="LAASP search",
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "prune_step": self.prune_step,
            "phase": self.phase,
            "history": self.history,
            "last_recovery_reduction": self.last_recovery_reduction,
            "dense_units": self.dense_units,
            "step_sizes": self.step_sizes,
            "loss_increase": self.loss_increase,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prune_step, self.phase = state["prune_step"], state["phase"]
        self.history = list(state["history"])
        self.last_recovery_reduction = state["last_recovery_reduction"]
        self.dense_units = dict(state["dense_units"])
        self.step_sizes = dict(state["step_sizes"])
        self.loss_increase = dict(state["loss_increase"])

    # ------------------------------------------------------------------ search
    def _search_step(self, context: PruningContext) -> PruningPlan | None:
        args = context.args
        reduction = 1.0 - context.macs.base_macs / context.dense_macs
        reached = context.reduction_from_dense()  # of what the target counts: MACs or predicted latency
        self._progress(context, reached)
        if reached >= args.target_reduction:
            return self._finish(reduction)
        candidates = self.candidates(context)
        if not candidates:
            warnings.warn(
                f"LAASP stopped at a {context.cost.quantity} reduction of {reached:.1%}, short of the target "
                f"{args.target_reduction:.1%}: every group is at its floor (layer_prune_limit="
                f"{args.layer_prune_limit}). Raise layer_prune_limit or lower the target.",
                stacklevel=2,
            )
            return self._finish(reduction)
        if not self.history:
            self._announce_size(context, candidates)
        candidates = self.without_overshoot(context, candidates)
        started, cpu_started = time.perf_counter(), time.process_time()
        rescored = self.to_rescore(candidates, args.laasp_rescore_top)
        losses, dense_loss = self.evaluate(context, [candidates[i] for i in rescored])
        for i, loss in zip(rescored, losses):
            if math.isfinite(loss):  # screened-out candidates keep their last score
                self.loss_increase.update({f"{candidates[i].group}/{c}": loss - dense_loss for c in candidates[i].criteria})
        best = min(range(len(rescored)), key=lambda j: (losses[j], rescored[j]))
        chosen = candidates[rescored[best]]
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        audit = self._audit(context, candidates, chosen) if args.laasp_audit else {}
        plan = self._plan(context, chosen, losses[best], dense_loss, len(rescored), seconds)
        self.history[-1].update(cpu_seconds=cpu_seconds, **audit)
        if len(self.history) == 1:
            self._announce_duration(context, seconds)
        return plan

    def _announce_size(self, context: PruningContext, candidates: list[Candidate]) -> None:
        """Before the first step: how many steps, candidates and candidate forwards the search will take."""
        args = context.args
        subset = self._loss_subset(context)
        images = sum(len(batch["labels"]) for batch in subset)
        forwards = SubsetLoss(context.model, subset, prefix=None).candidate_images(
            len(candidates), args.laasp_screen_fraction, args.laasp_screen_keep
        )
        context.log({
            "pruning/laasp_estimated_steps": float(self._estimated_steps(args)),
            "pruning/laasp_candidates_per_step": float(len(candidates)),
            "pruning/laasp_candidate_images_per_step": float(forwards),
        })
        groups = len({c.group for c in candidates})
        self._say(
            context,
            f"[hf_prune] LAASP search from step {context.state.global_step}: about {self._estimated_steps(args)} steps "
            f"of {args.laasp_flops_step:.1%} MACs to {args.target_flops_reduction:.1%}, each scoring {len(candidates)} "
            f"candidates ({groups} groups x {len(args.laasp_criteria)} criteria, identical unit sets merged) on "
            f"{images} training images: at most {forwards} candidate-image forwards per step (laasp_screen_fraction="
            f"{args.laasp_screen_fraction:g}, laasp_screen_keep={args.laasp_screen_keep}, laasp_race="
            f"{args.laasp_race:g}); training waits meanwhile",
        )

    def _announce_duration(self, context: PruningContext, seconds: float) -> None:
        """After the first step: the search's duration extrapolated from it."""
        total = seconds * self._estimated_steps(context.args)
        context.log({"pruning/laasp_estimated_search_seconds": total})
        self._say(
            context,
            f"[hf_prune] LAASP search: the first step took {seconds:.1f} s, so about {total / 60:.1f} min for "
            f"{self._estimated_steps(context.args)} steps (plus recoveries). Fewer steps: raise laasp_flops_step; "
            "cheaper steps: lower laasp_subset_size or laasp_screen_keep.",
        )

    @staticmethod
    def _estimated_steps(args) -> int:
        return math.ceil(args.target_flops_reduction / args.laasp_flops_step - 1e-9)

    @staticmethod
    def _say(context: PruningContext, line: str) -> None:
        """A plain line, printed like the trainer's prune lines (below any progress bar), on the main process."""
        if context.args.process_index == 0:
            tqdm.write(line)

    def to_rescore(self, candidates: list[Candidate], top: int) -> list[int]:
        """Indices of the candidates this step scores: all, or (lazy) the leaders, the group pruned last and new ones."""
        known = [self._known_increase(c) for c in candidates]
        last_group = self.history[-1]["group"] if self.history else None
        needed = {i for i, c in enumerate(candidates) if known[i] is None or c.group == last_group}
        if top == 0 or len(needed) == len(candidates):
            return list(range(len(candidates)))
        leaders = sorted((i for i in range(len(candidates)) if i not in needed), key=lambda i: (known[i], i))[:top]
        return sorted(needed | set(leaders))

    def _known_increase(self, candidate: Candidate) -> float | None:
        scores = [self.loss_increase.get(f"{candidate.group}/{c}") for c in candidate.criteria]
        scores = [v for v in scores if v is not None]
        return min(scores) if scores else None

    def _audit(self, context: PruningContext, candidates: list[Candidate], chosen: Candidate) -> dict[str, Any]:
        """The exhaustive search's choice (every candidate on the whole subset) on the same model, and whether
        the chosen one agrees."""
        cpu_started = time.process_time()
        losses, _ = self.evaluate(context, candidates, screen=False)
        best = candidates[min(range(len(candidates)), key=lambda i: (losses[i], i))]
        return {
            "exhaustive_group": best.group, "exhaustive_criterion": best.criteria[0],
            "agrees": best.group == chosen.group and best.removed == chosen.removed,
            "audit_cpu_seconds": time.process_time() - cpu_started,
        }

    def candidates(self, context: PruningContext) -> list[Candidate]:
        """Every distinct (group, unit set) the criteria propose for this step, in model order."""
        args = context.args
        result = []
        for group in context.graph.groups:
            count = self.units_to_target(context, group, self.step_units(context, group.name))
            if count == 0:
                continue
            weights = unit_weights(context.model, group)
            proposals: dict[tuple[int, ...], list[str]] = {}
            for criterion in args.laasp_criteria:
                scores = get_criterion(criterion)(weights)
                removed = tuple(sorted(torch.argsort(scores, stable=True)[:count].tolist()))
                proposals.setdefault(removed, []).append(criterion)
            result += [Candidate(group.name, tuple(criteria), removed) for removed, criteria in proposals.items()]
        return result

    @staticmethod
    def without_overshoot(context: PruningContext, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates that do not overshoot the target by more than ``TARGET_TOLERANCE``; if every one
        does, the one that overshoots it least.

        Near the target, a group with a coarse width multiple (16 of 64 channels with ``round_to``)
        can only remove several % of the MACs at once; picked by loss alone it would overshoot the
        target by that much. A candidate that lands closer (or falls short, and one more step runs)
        goes first; when that leaves only overshooting candidates, the least overshoot ends the search,
        as the one-shot selections give back what overshoots.
        """
        args = context.args
        least_cost = (1.0 - args.target_reduction - TARGET_TOLERANCE) * context.dense_cost
        costs = [context.cost.cost({c.group: len(c.removed)}) for c in candidates]
        close = [c for c, cost in zip(candidates, costs) if cost >= least_cost]
        return close or [candidates[max(range(len(candidates)), key=lambda i: (costs[i], -i))]]

    @staticmethod
    def dense_step_sizes(context: PruningContext) -> dict[str, int]:
        """Units per step of every group that saves MACs, about ``laasp_flops_step`` of the dense MACs each.

        Computed once on the dense model and then fixed, as the reference does (n_l = round(step / dF_l)),
        then rounded to the group's width multiple (``round_to``).
        """
        sizes = {}
        for group in context.graph.groups:
            per_unit = context.macs.macs_per_unit(group.name)
            if per_unit > 0:
                multiple = context.width_multiples.get(group.name, 1)
                units = context.args.laasp_flops_step * context.dense_macs / per_unit
                sizes[group.name] = max(1, round(units / multiple)) * multiple
        return sizes

    def step_units(self, context: PruningContext, group: str) -> int:
        """Units of ``group`` one step removes: its step size on the dense model, above the floor.

        What is left is a multiple of the group's width multiple (the first step of a group whose
        dense width is not one also removes the remainder).
        """
        units = next(g.num_units for g in context.graph.groups if g.name == group)
        multiple = context.width_multiples.get(group, 1)
        floor = self._floor(context, group, units)
        if units <= floor or group not in self.step_sizes:
            return 0  # at its floor, or removing it saves nothing
        return units - max(floor, (units - self.step_sizes[group]) // multiple * multiple)

    @staticmethod
    def units_to_target(context: PruningContext, group: ChannelGroup, step: int) -> int:
        """``step``, or fewer units where fewer already reach the target (the last step, whose full size
        would overshoot it: with ``round_to`` a step can be a quarter of a group).

        Fewer means the fewest that leave a multiple of the group's width multiple kept and reach the target.
        """
        budget = (1.0 - context.args.target_reduction) * context.dense_cost
        if step == 0 or context.cost.cost({group.name: step}) > budget:
            return step  # not the last step
        multiple = context.width_multiples.get(group.name, 1)
        for removed in range(group.num_units % multiple or multiple, step, multiple):
            if context.cost.cost({group.name: removed}) <= budget:
                return removed
        return step

    def _floor(self, context: PruningContext, group: str, units: int) -> int:
        """Fewest units ``group`` keeps: ``1 - layer_prune_limit`` of its dense units, rounded up to its multiple."""
        dense = self.dense_units.get(group, units)
        limit = min_units_kept(dense, context.args.layer_prune_limit)
        return aligned_floor(dense, limit, context.width_multiples.get(group, 1))

    def evaluate(
        self, context: PruningContext, candidates: list[Candidate], screen: bool = True
    ) -> tuple[list[float], float]:
        """Mean subset loss of every candidate (``inf`` if screened out), and the dense model's loss.

        ``screen=False`` scores every candidate on the whole subset (no screening, no race).
        """
        args = context.args
        subset = self._loss_subset(context)
        groups = {g.name: g for g in context.graph.groups}
        masked = [MaskedCandidate(unit_output_masks(context.model, groups[c.group], c.removed)) for c in candidates]
        prefix = PrefixCache(context.model, subset[0]["pixel_values"][:1])
        evaluator = SubsetLoss(context.model, subset, prefix, disable_tqdm=self._quiet(context))
        shortcuts = (args.laasp_screen_fraction, args.laasp_screen_keep, args.laasp_race) if screen else ()
        losses = evaluator.mean_losses(masked, *shortcuts)
        return losses, evaluator.dense_loss

    def _loss_subset(self, context: PruningContext) -> list[dict[str, torch.Tensor]]:
        if self._subset is None:
            args = context.args
            device = next(context.model.parameters()).device
            self._subset = build_loss_subset(
                context.train_dataset, context.data_collator, args.laasp_subset_size, args.laasp_batch_size,
                args.seed, device,
            )
        return self._subset

    def _plan(
        self, context: PruningContext, chosen: Candidate, loss: float, dense_loss: float, evaluated: int, seconds: float
    ) -> PruningPlan:
        args = context.args
        count = len(chosen.removed)
        reduction = 1.0 - context.macs.macs({chosen.group: count}) / context.dense_macs
        # Checked after the final step too: the reference recovers the last chunk as well.
        recover = reduction - self.last_recovery_reduction >= args.laasp_recover_flops - 1e-12
        if recover:
            self.last_recovery_reduction = reduction
        self.history.append({
            "group": chosen.group, "criterion": chosen.criteria[0], "same_units": list(chosen.criteria[1:]),
            "removed": list(chosen.removed), "loss": loss, "dense_loss": dense_loss, "reduction": reduction,
            "recovery_steps": self._recovery_steps if recover else 0, "seconds": seconds,
        })
        context.log({
            "pruning/laasp_step": float(len(self.history)),
            "pruning/laasp_loss": loss,
            "pruning/laasp_dense_loss": dense_loss,
            "pruning/laasp_reduction": reduction,
            "pruning/laasp_candidates": float(evaluated),
            "pruning/laasp_step_seconds": seconds,
        })
        units = next(g.num_units for g in context.graph.groups if g.name == chosen.group)
        removed = set(chosen.removed)
        return PruningPlan(
            {chosen.group: [u for u in range(units) if u not in removed]},
            reason=f"laasp step {len(self.history)}: {chosen.group} -{count} units by {chosen.criteria[0]} "
            f"(subset loss {loss:.4f}, dense {dense_loss:.4f})",
            recovery_steps=self._recovery_steps if recover else 0,
            continues=True,
            last=context.cost.cost({chosen.group: count}) <= (1.0 - args.target_reduction) * context.dense_cost,
        )

    def _finish(self, reduction: float) -> None:
        self.phase = "done"
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        logger.info(f"LAASP finished after {len(self.history)} steps at a MACs reduction of {reduction:.1%}")
        return None

    def _floor_reduction(self, context: PruningContext) -> float:
        """Reduction of what the target counts (MACs or latency) with every group at its floor."""
        groups = context.graph.groups
        removable = {g.name: max(0, g.num_units - self._floor(context, g.name, g.num_units)) for g in groups}
        return context.cost.reduction(removable)

    def _check_reachable(self, context: PruningContext) -> None:
        """Fail before training, as the one-shot methods do, when the floors stop the search short of the target."""
        args = context.args
        reachable = self._floor_reduction(context)
        if reachable < args.target_reduction:
            raise UnreachableTargetError(
                f"a {context.cost.quantity} reduction of {args.target_reduction:.1%} is unreachable for LAASP: keeping "
                f"at least {1 - args.layer_prune_limit:.0%} of every group (layer_prune_limit={args.layer_prune_limit}, "
                f"rounded up to round_to's multiples) allows at most {reachable:.1%}. Lower the target, raise "
                "layer_prune_limit or lower round_to."
            )

    @staticmethod
    def _steps_per_recovery(context: PruningContext) -> int:
        """``laasp_recovery_epochs`` in optimizer steps; at least one when recovery is on."""
        epochs = context.args.laasp_recovery_epochs
        steps = round(epochs * context.steps_per_epoch)
        if epochs > 0 and steps == 0:
            logger.warning(
                f"LAASP: laasp_recovery_epochs={epochs:g} is {epochs * context.steps_per_epoch:.2f} optimizer steps at "
                f"{context.steps_per_epoch:g} steps per epoch; each recovery runs 1 step instead. Raise "
                "laasp_recovery_epochs (or train on more images) for longer recoveries, or set it to 0 for none."
            )
            return 1
        return steps

    def _progress(self, context: PruningContext, reduction: float) -> None:
        if self._bar is None:
            target = round(100 * context.args.target_reduction)
            self._bar = tqdm(total=target, desc=f"laasp search (% {context.cost.quantity} removed)",
                             disable=self._quiet(context))
        self._bar.n = min(round(100 * reduction), self._bar.total)
        self._bar.refresh()

    @staticmethod
    def _quiet(context: PruningContext) -> bool:
        return bool(context.args.disable_tqdm) or context.args.process_index != 0


__all__ = ["Candidate", "LAASPPruning"]
