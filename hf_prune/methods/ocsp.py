"""OCSPruner: one-cycle structured pruning with a stability-driven sub-network search.

Training starts dense. At every monitoring check the method ranks all units by group saliency
and picks the sub-network that meets the MACs target (the *pruning set* is what it would
remove now). From ``ocsp_reg_start`` (or, when ``ocsp_plateau_tolerance`` is set, from an
earlier plateau of the stability score) structured sparsity regularization shrinks exactly the
units in the current pruning set after every optimizer step. When the running mean of the
stability score reaches the threshold with its whole window under regularization (or at the
deadline) the model is pruned once, physically, and training continues on the same LR schedule
with the slim network. Unlike the reference, a stable prune also waits until the pruning set's
mean unit norm has shrunk to ``ocsp_max_norm_ratio`` of the kept units' (see that setting).

Stability score at check t: the mean over groups of the Jaccard index of the kept-unit sets at
checks t and t - lag; the decision uses its running mean over ``window`` checks.

Any run length follows the reference's trajectory: lag, window and the regularization interval
are counted in check intervals, by default 1/300 of the run (the reference checks once per epoch
of 300), so they cover the reference's fractions of the run. Checks are spread evenly over the
optimizer steps; when an interval is shorter than one step, checks come every step and lag and
window are converted to steps (rounded, at least 1) while ``reg`` still grows by the fraction of
the run. The shrink strength is scaled to the run's number of steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers.utils import logging

from hf_prune.methods._registry import register_method
from hf_prune.methods.base import PruningContext, PruningMethod, PruningPlan
from hf_prune.plots import plot_curves
from hf_prune.structure import ChannelGroup, MacsModel, Selection, group_saliencies, select_lowest

# The reference's saliency divides each tensor's squared unit norm by sqrt(fan) (ocspruner/importance.py).
FAN_POWER = 0.5

STABILITY_PLOT_NAME = "ocsp_stability.png"

logger = logging.get_logger(__name__)
# The reference's regularization strengths are per optimizer step of its CIFAR recipe:
# 300 epochs x 391 steps. Scaling by this over the run's steps keeps the total shrink the same.
REFERENCE_RUN_STEPS = 300 * 391
REFERENCE_EPOCHS = 300


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|a ∩ b| / |a ∪ b| of two sets of unit indices (1.0 for two empty sets)."""
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def stability_score(kept_now: Mapping[str, Sequence[int]], kept_before: Mapping[str, Sequence[int]]) -> float:
    """Mean over groups of the Jaccard index of the units kept now and before."""
    return sum(jaccard(kept_now[name], kept_before[name]) for name in kept_now) / max(len(kept_now), 1)


def flops_weighted_scores(
    scores: Mapping[str, torch.Tensor], groups: Sequence[ChannelGroup], macs: MacsModel
) -> dict[str, torch.Tensor]:
    """Scales each group's scores by ``1 - softmax(MMACs saved per unit)``: costly units go first."""
    saved = torch.tensor([macs.macs_per_unit(g.name) / 1e6 for g in groups], dtype=torch.float64)
    share = torch.softmax(saved, dim=0)
    return {g.name: scores[g.name] * float(1.0 - share[i]) for i, g in enumerate(groups)}


@dataclass
class _SearchState:
    """Everything the search must carry across a checkpoint (JSON-serializable)."""

    phase: str = "monitoring"  # monitoring -> regularizing -> pruned
    checks: int = 0
    reg: float = 0.0
    reg_start_check: int | None = None
    reg_start_step: int | None = None
    kept_history: list[dict[str, list[int]]] = field(default_factory=list)  # last `lag` checks
    stability: list[tuple[float, float]] = field(default_factory=list)  # (epoch, score) per check
    stability_avg: list[tuple[float, float]] = field(default_factory=list)
    norm_ratio: list[tuple[float, float]] = field(default_factory=list)  # (epoch, pruning set / kept) per check
    pruning_set: dict[str, list[int]] = field(default_factory=dict)  # units removed if pruned now
    reg_start_epoch: float | None = None
    pruned_epoch: float | None = None
    search_seconds: float = 0.0


@dataclass
class OCSPArguments:
    """Settings of ``pruning_method="ocsp"``; epoch defaults are the reference CIFAR recipe (300 epochs)
    scaled to the run's length."""

    ocsp_monitor_interval: float | None = field(
        default=None,
        metadata={
            "help": "OCSP: epochs between sub-network checks (fractions allowed; checks are spread evenly over "
            "the optimizer steps, at most one per step). Default: num_train_epochs / 300 (the reference's one "
            "check per epoch of 300), so lag, window and ocsp_reg_interval cover the reference's fractions of the run."
        },
    )
    ocsp_monitor_start: float | None = field(
        default=None,
        metadata={"help": "OCSP: epoch of the first check. Default: 2/300 of the run (reference: epoch 2)."},
    )
    ocsp_stability_lag: int = field(
        default=2,
        metadata={"help": "OCSP: the stability score compares the kept units with those this many check "
                  "intervals back (reference: 2 epochs)."},
    )
    ocsp_stability_window: int = field(
        default=3,
        metadata={"help": "OCSP: check intervals averaged into the running stability score (reference: 3 epochs)."},
    )
    ocsp_stability_threshold: float = field(
        default=0.999,
        metadata={"help": "OCSP: prune once the running stability score (mean Jaccard, in (0, 1]) reaches this."},
    )
    ocsp_reg_start: float | None = field(
        default=None,
        metadata={
            "help": "OCSP: epoch at which sparsity regularization of the pruning set starts (at the latest, when "
            "ocsp_plateau_tolerance is set). Default: 32/300 of the run (the reference's CIFAR path regularizes "
            "from epoch sl_start + 2 = 32 of 300)."
        },
    )
    ocsp_plateau_tolerance: float | None = field(
        default=None,
        metadata={
            "help": "OCSP: when set (the reference's ImageNet path uses 1e-4), regularization starts earlier, at the "
            "first check after the third where the running stability rose by at most this over two checks. "
            "Unset (the reference's CIFAR path): it starts exactly at ocsp_reg_start."
        },
    )
    ocsp_prune_deadline: float | None = field(
        default=None,
        metadata={"help": "OCSP: epoch at which to prune even if not yet stable. Default: 0.4 of the run (reference 120/300)."},
    )
    ocsp_reg_init: float = field(
        default=1e-4,
        metadata={
            "help": "OCSP: initial shrink strength; after every optimizer step the pruning set's weights are "
            "multiplied by 1 - reg * lr * (117300 / max_steps), i.e. in the units of the reference's "
            "117,300-step CIFAR run, so the total shrink does not depend on the run's length."
        },
    )
    ocsp_reg_delta: float = field(
        default=1e-4,
        metadata={"help": "OCSP: added to the shrink strength every ocsp_reg_interval check intervals of the run."},
    )
    ocsp_reg_interval: int = field(
        default=3,
        metadata={"help": "OCSP: check intervals between increases of the shrink strength (reference: 3 epochs)."},
    )
    ocsp_max_norm_ratio: float = field(
        default=0.2,
        metadata={
            "help": "OCSP: prune on stability only once the pruning set's mean unit norm is at most this fraction of "
            "the kept units' (pruning/pruning_set_norm_ratio). The reference has no such rule: its stability over 2 "
            "epochs of a 300-epoch run is only reached once the shrink has emptied the pruning set, while checks "
            "one optimizer step apart (runs of fewer than 300 steps per 300 check intervals) are stable from the "
            "start. inf prunes on stability alone."
        },
    )
    ocsp_flops_weighting: bool = field(
        default=True,
        metadata={
            "help": "OCSP: multiply each group's saliency by 1 - softmax(MMACs saved per unit), so costly "
            "units are pruned first."
        },
    )


@register_method
class OCSPruning(PruningMethod):
    """One-cycle structured pruning (OCSPruner), configured by the ``ocsp_*`` fields of ``PruningArguments``."""

    name = "ocsp"
    arguments = OCSPArguments
    figures = (("Stability indicator", STABILITY_PLOT_NAME),)

    @classmethod
    def validate_arguments(cls, args) -> None:
        if not 0.0 < args.ocsp_stability_threshold <= 1.0:
            raise ValueError(f"ocsp_stability_threshold must lie in (0, 1], got {args.ocsp_stability_threshold}")
        for name in ("ocsp_stability_lag", "ocsp_stability_window", "ocsp_reg_interval"):
            if getattr(args, name) < 1:
                raise ValueError(f"{name} must be a positive number of checks, got {getattr(args, name)}")
        for name in ("ocsp_reg_init", "ocsp_reg_delta"):
            if not getattr(args, name) >= 0:  # NaN fails too
                raise ValueError(f"{name} must be >= 0, got {getattr(args, name)}")
        if args.ocsp_plateau_tolerance is not None and not args.ocsp_plateau_tolerance >= 0:
            raise ValueError(
                f"ocsp_plateau_tolerance must be >= 0, got {args.ocsp_plateau_tolerance}: leave it unset to start "
                "regularization exactly at ocsp_reg_start"
            )
        for name in ("ocsp_monitor_interval", "ocsp_monitor_start", "ocsp_reg_start", "ocsp_prune_deadline"):
            value = getattr(args, name)
            if value is not None and not value >= 0:  # NaN fails too
                raise ValueError(f"{name} is an epoch and must be >= 0, got {value}")
        if not args.ocsp_max_norm_ratio > 0:
            raise ValueError(f"ocsp_max_norm_ratio must be > 0 (inf turns the rule off), got {args.ocsp_max_norm_ratio}")
        if args.ocsp_monitor_interval == 0:
            raise ValueError("ocsp_monitor_interval must be > 0 epochs (leave it unset for the default)")

    def __init__(self) -> None:
        self.search = _SearchState()
        self._steps_per_check = 1.0
        self._lag = self._window = 1
        self._reg_interval_steps = 1.0
        self._monitor_start_step = 0
        self._reg_start_step = 0
        self._deadline_step = 0
        self._reg_scale = 1.0
        self._shrink_slices: list[tuple[str, int, torch.Tensor]] = []

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, context: PruningContext) -> None:
        args, steps_per_epoch = context.args, context.steps_per_epoch
        epochs = context.state.max_steps / steps_per_epoch
        relative = epochs / REFERENCE_EPOCHS
        interval = args.ocsp_monitor_interval if args.ocsp_monitor_interval is not None else relative
        nominal = interval * steps_per_epoch  # optimizer steps per check interval, possibly < 1
        self._steps_per_check = max(1.0, nominal)
        intervals_per_check = self._steps_per_check / nominal
        self._lag = max(1, round(args.ocsp_stability_lag / intervals_per_check))
        self._window = max(1, round(args.ocsp_stability_window / intervals_per_check))
        self._reg_interval_steps = args.ocsp_reg_interval * nominal
        monitor_start = args.ocsp_monitor_start if args.ocsp_monitor_start is not None else 2 * relative
        deadline = args.ocsp_prune_deadline if args.ocsp_prune_deadline is not None else 0.4 * epochs
        self._monitor_start_step = round(monitor_start * steps_per_epoch)
        self._deadline_step = context.step_in_run(deadline, "ocsp_prune_deadline")
        reg_start = args.ocsp_reg_start if args.ocsp_reg_start is not None else 32 * relative
        self._reg_start_step = round(reg_start * steps_per_epoch)
        if self._monitor_start_step >= self._deadline_step:
            raise ValueError(
                f"ocsp_monitor_start={monitor_start:g} must come before the prune deadline ({deadline:g} epochs)"
            )
        self._reg_scale = REFERENCE_RUN_STEPS / context.state.max_steps
        if not context.is_pruned:
            self._select(context)  # an unreachable target fails now, not after hours of training

    def on_step_end(self, context: PruningContext) -> PruningPlan | None:
        if self.search.phase == "pruned":
            return None
        started = time.perf_counter()
        step = context.state.global_step
        if self.search.phase == "regularizing":
            self._shrink(context)
        plan = None
        if step >= self._monitor_start_step and (self._check_due(step) or step >= self._deadline_step):
            plan = self._check(context)
        self.search.search_seconds += time.perf_counter() - started
        return plan

    def _check_due(self, step: int) -> bool:
        """Checks fall every ``_steps_per_check`` steps (a float: spread evenly, at most one per step)."""
        return int(step / self._steps_per_check) > int((step - 1) / self._steps_per_check)

    def on_train_end(self, context: PruningContext) -> None:
        if not context.args.should_save:
            return
        if not self.search.stability:
            logger.warning(f"{STABILITY_PLOT_NAME} not written: the run ended before the first sub-network check "
                           f"(step {self._monitor_start_step}, ocsp_monitor_start).")
            return
        markers = {"regularization starts": self.search.reg_start_epoch, "prune": self.search.pruned_epoch}
        plot_curves(
            {
                "stability": self.search.stability,
                f"running mean ({self._window} checks)": self.search.stability_avg,
                "pruning-set / kept mean norm": self.search.norm_ratio,
            },
            os.path.join(context.args.output_dir, STABILITY_PLOT_NAME),
            xlabel="epoch",
            ylabel="mean Jaccard of kept units; norm ratio",
            title=f"OCSPruner sub-network stability (threshold {context.args.ocsp_stability_threshold})",
            markers={k: v for k, v in markers.items() if v is not None},
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.search)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.search = _SearchState(**state)
        self.search.stability = [tuple(p) for p in self.search.stability]
        self.search.stability_avg = [tuple(p) for p in self.search.stability_avg]
        self.search.norm_ratio = [tuple(p) for p in self.search.norm_ratio]
        self._shrink_slices = []  # rebuilt from the pruning set at the next shrink

    # ------------------------------------------------------------------ search
    def _check(self, context: PruningContext) -> PruningPlan | None:
        """Recompute the sub-network, update stability and phase; prune when stable or due."""
        args, search = context.args, self.search
        step, epoch = context.state.global_step, float(context.state.epoch or 0.0)
        saliencies = group_saliencies(context.model, context.graph.groups, FAN_POWER)
        selection = self._select(context, saliencies)
        groups = context.graph.groups
        kept = {g.name: selection.keep.get(g.name, list(range(g.num_units))) for g in groups}
        search.pruning_set = {
            g.name: sorted(set(range(g.num_units)) - set(selection.keep[g.name])) for g in groups if g.name in selection.keep
        }
        self._shrink_slices = []
        search.checks += 1
        search.norm_ratio.append((epoch, pruning_set_norm_ratio(saliencies, search.pruning_set)))

        if len(search.kept_history) >= self._lag:
            search.stability.append((epoch, stability_score(kept, search.kept_history[0])))
            recent = [score for _, score in search.stability[-self._window:]]
            search.stability_avg.append((epoch, sum(recent) / len(recent)))
        search.kept_history = (search.kept_history + [kept])[-self._lag:]

        if search.phase == "monitoring" and self._regularization_due(step, args.ocsp_plateau_tolerance):
            search.phase, search.reg_start_check, search.reg_start_step, search.reg_start_epoch = (
                "regularizing", search.checks, step, epoch
            )
        if search.phase == "regularizing":
            # +delta per ocsp_reg_interval check intervals of the run, however many checks actually fell there
            increments = int((step - search.reg_start_step) / self._reg_interval_steps)
            search.reg = args.ocsp_reg_init + increments * args.ocsp_reg_delta

        stable = (
            self._regularized_window_full()
            and search.stability_avg[-1][1] >= args.ocsp_stability_threshold
            and search.norm_ratio[-1][1] <= args.ocsp_max_norm_ratio
        )
        self._log(context, selection)
        if not stable and step < self._deadline_step:
            return None
        search.phase, search.pruned_epoch = "pruned", epoch
        reason = "stable sub-network" if stable else "prune deadline reached"
        return PruningPlan(selection.keep, reason=f"ocsp: {reason} at epoch {epoch:.2f}")

    def _regularized_window_full(self) -> bool:
        """Every score in the running window compares two structures found under regularization."""
        if self.search.phase != "regularizing":
            return False
        regularized_checks = self.search.checks - self.search.reg_start_check
        return regularized_checks >= self._lag + self._window - 1

    def _regularization_due(self, step: int, tolerance: float | None) -> bool:
        """At the start step, or (with a tolerance) earlier once the running stability stops rising."""
        if step >= self._reg_start_step:
            return True
        if tolerance is None:
            return False
        averages = [score for _, score in self.search.stability_avg]
        return self.search.checks > 3 and len(averages) > 2 and averages[-1] - averages[-3] <= tolerance

    def _select(self, context: PruningContext, saliencies: dict[str, torch.Tensor] | None = None) -> Selection:
        groups = context.graph.groups
        scores = saliencies if saliencies is not None else group_saliencies(context.model, groups, FAN_POWER)
        if context.args.ocsp_flops_weighting:
            scores = flops_weighted_scores(scores, groups, context.macs)
        return select_lowest(
            groups, context.ranking_scores(scores), context.cost, context.args.target_reduction,
            context.args.layer_prune_limit, multiples=context.width_multiples, ties=context.width_ties,
        )

    def _log(self, context: PruningContext, selection: Selection) -> None:
        search = self.search
        record = {
            "pruning/reg": search.reg,
            "pruning/predicted_reduction": selection.reduction,
            "pruning/pruning_set_size": float(sum(len(v) for v in search.pruning_set.values())),
            "pruning/pruning_set_norm_ratio": search.norm_ratio[-1][1],
            "pruning/search_seconds": search.search_seconds,
        }
        if search.stability:
            record["pruning/stability"] = search.stability[-1][1]
            record["pruning/stability_avg"] = search.stability_avg[-1][1]
        context.log(record)

    # ------------------------------------------------------------------ regularization
    def _shrink(self, context: PruningContext) -> None:
        """Decoupled shrink ``w *= 1 - reg * lr`` of every coupled slice of the pruning set (biases spared)."""
        factor = 1.0 - self.search.reg * self._reg_scale * context.learning_rate
        factor = max(factor, 0.0)
        if not self._shrink_slices:
            self._shrink_slices = _shrink_slices(context.graph.groups, self.search.pruning_set)
        params = dict(context.model.named_parameters())
        with torch.no_grad():
            for param_name, dim, index in self._shrink_slices:
                param = params[param_name]
                index = index.to(param.device)
                param.index_copy_(dim, index, param.index_select(dim, index) * factor)


def pruning_set_norm_ratio(saliencies: Mapping[str, torch.Tensor], pruning_set: Mapping[str, Sequence[int]]) -> float:
    """Mean unit norm (square root of the saliency) of the pruning set over that of the kept units.

    Near 0 once regularization has emptied the pruning set: pruning it then barely changes the
    network. 1.0 when nothing is to be pruned.
    """
    pruned, kept = [], []
    for name, scores in saliencies.items():
        removed = torch.zeros(len(scores), dtype=torch.bool)
        removed[list(pruning_set.get(name, []))] = True
        norms = scores.clamp_min(0).sqrt()
        pruned.append(norms[removed])
        kept.append(norms[~removed])
    pruned, kept = torch.cat(pruned), torch.cat(kept)
    if not len(pruned) or not len(kept) or float(kept.mean()) == 0.0:
        return 1.0
    return float(pruned.mean() / kept.mean())


def _shrink_slices(
    groups: Sequence[ChannelGroup], pruning_set: Mapping[str, Sequence[int]]
) -> list[tuple[str, int, torch.Tensor]]:
    """(parameter, dim, element indices) of every weight slice holding a unit of the pruning set."""
    slices = []
    for group in groups:
        units = pruning_set.get(group.name)
        if not units:
            continue
        for piece in group.slices:
            if piece.param_name.endswith("bias"):
                continue
            index = piece.index[torch.tensor(units)].flatten()
            slices.append((piece.param_name, piece.dim, index))
    return slices


__all__ = ["OCSPruning", "flops_weighted_scores", "jaccard", "pruning_set_norm_ratio", "stability_score"]
