"""``PruningArguments``: ``TrainingArguments`` plus the settings of structured pruning."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy

PRUNING_METHODS = ("none", "magnitude", "random", "ocsp", "laasp", "tp_groupnorm")
OPTIMIZER_STATE_POLICIES = ("slice", "reset")


@dataclass
class PruningArguments(TrainingArguments):
    """Training arguments of a :class:`~hf_prune.PruningTrainer` run.

    Every ``TrainingArguments`` field works as usual. Image batches are dictionaries with
    ``pixel_values`` and ``labels``, so ``remove_unused_columns`` defaults to False.
    """

    pruning_method: str = field(
        default="magnitude", metadata={"help": f"How to choose what to prune: one of {PRUNING_METHODS}."}
    )
    target_flops_reduction: float = field(
        default=0.5,
        metadata={"help": "Fraction of the dense model's MACs to remove, in (0, 1); 0.5 halves the MACs."},
    )
    layer_prune_limit: float = field(
        default=0.75,
        metadata={"help": "Largest fraction of any coupled group's channels (or heads) that may be removed."},
    )
    prune_epoch: float | None = field(
        default=None,
        metadata={
            "help": "Epoch (fractions allowed) at which one-shot methods prune. Default: a quarter of the run for "
            "magnitude and random, half of it for tp_groupnorm (its sparsity training)."
        },
    )
    # OCSPruner. Epoch defaults are the reference CIFAR recipe (300 epochs) scaled to this run's length.
    ocsp_monitor_interval: float | None = field(
        default=None,
        metadata={
            "help": "OCSP: epochs between sub-network checks (fractions allowed; at least one optimizer step). "
            "Default: num_train_epochs / 300 (the reference's one check per epoch of 300), at least 0.25."
        },
    )
    ocsp_monitor_start: float | None = field(
        default=None,
        metadata={"help": "OCSP: epoch of the first check. Default: 2/300 of the run (reference: epoch 2)."},
    )
    ocsp_stability_lag: int = field(
        default=2,
        metadata={"help": "OCSP: the stability score compares the kept units with those this many checks back."},
    )
    ocsp_stability_window: int = field(
        default=3, metadata={"help": "OCSP: checks averaged into the running stability score."}
    )
    ocsp_stability_threshold: float = field(
        default=0.999,
        metadata={"help": "OCSP: prune once the running stability score (mean Jaccard, in (0, 1]) reaches this."},
    )
    ocsp_reg_start: float | None = field(
        default=None,
        metadata={
            "help": "OCSP: epoch by which sparsity regularization of the pruning set starts at the latest; it "
            "starts earlier at the first check (after the third) where the running stability rose by at most "
            "ocsp_plateau_tolerance over two checks. Default: 0.1 of the run (reference CIFAR: 30/300)."
        },
    )
    ocsp_plateau_tolerance: float = field(
        default=1e-4, metadata={"help": "OCSP: stability rise over two checks that counts as a plateau."}
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
        default=1e-4, metadata={"help": "OCSP: added to the shrink strength every ocsp_reg_interval checks."}
    )
    ocsp_reg_interval: int = field(
        default=3, metadata={"help": "OCSP: checks between increases of the shrink strength (reference: 3 epochs)."}
    )
    ocsp_flops_weighting: bool = field(
        default=True,
        metadata={
            "help": "OCSP: multiply each group's saliency by 1 - softmax(MMACs saved per unit), so costly "
            "units are pruned first."
        },
    )
    tp_reg: float = field(
        default=5e-4,
        metadata={
            "help": "tp_groupnorm: coefficient of Torch-Pruning's GroupNormPruner regularizer (its CIFAR ResNet "
            "group_sl command uses 5e-4)."
        },
    )
    ignored_layers: list[str] = field(
        default_factory=list,
        metadata={"help": "Module names whose shapes must not change (the classifier output is always kept)."},
    )
    optimizer_state_after_prune: str = field(
        default="slice",
        metadata={
            "help": "What happens to momentum/Adam state at a prune: 'slice' keeps it for the surviving "
            "channels, 'reset' starts the optimizer afresh."
        },
    )
    eval_around_prune: bool = field(
        default=False,
        metadata={"help": "Evaluate right before and right after every prune event (recorded in the event)."},
    )
    eval_after_prune_bn_batches: int = field(
        default=8,
        metadata={
            "help": "For the evaluation right after a prune, re-estimate BatchNorm statistics on this many training "
            "batches first (weights untouched, statistics restored afterwards); 0 evaluates with the stale ones."
        },
    )
    card_latency: bool = field(
        default=True,
        metadata={
            "help": "At the final save_model, measure the CPU latency of the dense and the slim model "
            "(batch 1 and 64) for the model card."
        },
    )
    laasp_prune_start: float | None = field(
        default=None,
        metadata={
            "help": "LAASP: epoch (fractions allowed) at which the search starts. Default: 0.3 of the run "
            "(the reference prunes at epoch 60 of 200)."
        },
    )
    laasp_flops_step: float = field(
        default=0.01,
        metadata={"help": "LAASP: fraction of the dense MACs one search step removes (sets each group's step size)."},
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
        default=64, metadata={"help": "LAASP: images per forward when scoring candidates (per device)."}
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
    laasp_screen_fraction: float = field(
        default=0.125,
        metadata={
            "help": "LAASP: score all candidates on this leading fraction of the subset first and only the best "
            "laasp_screen_keep on all of it; 0 scores every candidate on the whole subset."
        },
    )
    laasp_screen_keep: int = field(
        default=8, metadata={"help": "LAASP: candidates that pass the screening pass to the whole subset."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: image transforms produce the model inputs on the fly."}
    )

    def __post_init__(self) -> None:
        if self.pruning_method not in PRUNING_METHODS:
            raise ValueError(f"unknown pruning_method '{self.pruning_method}': choose one of {PRUNING_METHODS}")
        if self.pruning_method != "none" and not 0.0 < self.target_flops_reduction < 1.0:
            raise ValueError(
                f"target_flops_reduction must lie in (0, 1), got {self.target_flops_reduction}: "
                "it is the fraction of MACs to remove (0.5 halves them)"
            )
        if not 0.0 < self.layer_prune_limit < 1.0:
            raise ValueError(f"layer_prune_limit must lie in (0, 1), got {self.layer_prune_limit}")
        if self.optimizer_state_after_prune not in OPTIMIZER_STATE_POLICIES:
            raise ValueError(
                f"optimizer_state_after_prune must be one of {OPTIMIZER_STATE_POLICIES}, "
                f"got '{self.optimizer_state_after_prune}'"
            )
        self._validate_ocsp()
        if self.eval_after_prune_bn_batches < 0:
            raise ValueError(f"eval_after_prune_bn_batches must be >= 0, got {self.eval_after_prune_bn_batches}")
        if self.tp_reg < 0:
            raise ValueError(f"tp_reg must be >= 0, got {self.tp_reg}")
        if self.fsdp or self.fsdp_config or self.deepspeed:
            raise ValueError(
                "FSDP and DeepSpeed are not supported by hf_prune yet: physical pruning changes parameter shapes, "
                "which sharded optimizers cannot follow. Use DDP (accelerate launch --multi_gpu) instead."
            )
        if HubStrategy(self.hub_strategy) in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            raise ValueError(
                f"hub_strategy='{self.hub_strategy}' would upload checkpoint folders (optimizer and RNG state as torch "
                "pickles): use 'every_save' (the slim model after each save) or 'end'"
            )
        self._validate_laasp()
        self._validate_launch()
        super().__post_init__()

    def _validate_launch(self) -> None:
        """Several CPU processes need ``use_cpu``: without it transformers runs each one alone, silently."""
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1 and not self.use_cpu and not torch.accelerator.is_available():
            raise ValueError(
                f"launched as {processes} processes on a machine without GPU: pass --use_cpu (use_cpu=True), else "
                "every process trains its own model on all the data"
            )

    def _validate_ocsp(self) -> None:
        if not 0.0 < self.ocsp_stability_threshold <= 1.0:
            raise ValueError(f"ocsp_stability_threshold must lie in (0, 1], got {self.ocsp_stability_threshold}")
        for name in ("ocsp_stability_lag", "ocsp_stability_window", "ocsp_reg_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of checks, got {getattr(self, name)}")
        for name in ("ocsp_reg_init", "ocsp_reg_delta", "ocsp_plateau_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("ocsp_monitor_interval", "ocsp_monitor_start", "ocsp_reg_start", "ocsp_prune_deadline"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} is an epoch and must be >= 0, got {value}")
        if self.ocsp_monitor_interval == 0:
            raise ValueError("ocsp_monitor_interval must be > 0 epochs (leave it unset for the default)")

    def _validate_laasp(self) -> None:
        if self.laasp_prune_start is not None and self.laasp_prune_start < 0:
            raise ValueError(f"laasp_prune_start must be >= 0 epochs (or None for 0.3 of the run), got {self.laasp_prune_start}")
        for name in ("laasp_flops_step", "laasp_recover_flops"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1) (a fraction of the dense MACs), got {getattr(self, name)}")
        if not self.laasp_criteria or len(set(self.laasp_criteria)) != len(self.laasp_criteria):
            raise ValueError(f"laasp_criteria must name at least one criterion, each once; got {self.laasp_criteria}")
        for name in ("laasp_subset_size", "laasp_batch_size", "laasp_screen_keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.laasp_recovery_epochs < 0:
            raise ValueError(f"laasp_recovery_epochs must be >= 0 (0 turns recovery off), got {self.laasp_recovery_epochs}")
        if not 0.0 <= self.laasp_screen_fraction < 1.0:
            raise ValueError(
                f"laasp_screen_fraction must lie in [0, 1) (0 turns screening off), got {self.laasp_screen_fraction}"
            )
