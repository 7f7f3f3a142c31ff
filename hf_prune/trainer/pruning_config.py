"""``PruningArguments``: ``TrainingArguments`` plus the settings of structured pruning."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

PRUNING_METHODS = ("none", "magnitude", "ocsp", "laasp")
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
            "help": "Epoch (fractions allowed) at which one-shot methods prune. Default: a quarter of the run, "
            "which falls inside any run of at least two optimizer steps."
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
        if self.fsdp or self.fsdp_config or self.deepspeed:
            raise ValueError(
                "FSDP and DeepSpeed are not supported by hf_prune yet: physical pruning changes parameter shapes, "
                "which sharded optimizers cannot follow. Use DDP (accelerate launch --multi_gpu) instead."
            )
        super().__post_init__()
