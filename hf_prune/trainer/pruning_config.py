"""``PruningArguments``: ``TrainingArguments`` plus the settings of structured pruning.

Costs are counted in MACs (multiply-accumulates) everywhere in hf_prune. The user-facing name
``target_flops_reduction`` follows the papers, whose "FLOPs" are MACs: a reduction of 0.5 halves
the MACs (and the FLOPs, which are twice the MACs). ``target_latency_reduction`` prunes to a
fraction of the dense model's measured latency instead (the two are exclusive).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy

from hf_prune.methods import GroupNormArguments, LAASPArguments, OCSPArguments, list_methods, method_class
from hf_prune.methods._registry import registered_method_names, validate_method_arguments
from hf_prune.structure.widths import AUTO, parse_round_to

OPTIMIZER_STATE_POLICIES = ("slice", "reset")
EVAL_AROUND_PRUNE_EVENTS = ("last", "all")
DEFAULT_TARGET_FLOPS_REDUCTION = 0.5


@dataclass
class PruningArguments(TrainingArguments, GroupNormArguments, LAASPArguments, OCSPArguments):
    """Training arguments of a :class:`~hf_prune.PruningTrainer` run.

    Every ``TrainingArguments`` field works as usual. The pruning settings are flat fields: the
    ones below apply to every method, the ``ocsp_*``, ``laasp_*`` and ``tp_*`` ones come from each
    method's own arguments dataclass (:meth:`argument_groups` tells which is which), and each
    method validates its own. Image batches are dictionaries with ``pixel_values`` and
    ``labels``, so ``remove_unused_columns`` defaults to False.
    """

    pruning_method: str = field(
        default="magnitude",
        metadata={"help": "How to choose what to prune (a registered method).", "choices": registered_method_names()},
    )
    target_flops_reduction: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of the dense model's FLOPs to remove, in (0, 1); 0.5 halves them. hf_prune counts "
            "MACs (multiply-accumulates, half the FLOPs, as the papers' tables do): the fraction is the same. "
            f"Default: {DEFAULT_TARGET_FLOPS_REDUCTION}, unless target_latency_reduction is set (they are exclusive)."
        },
    )
    target_latency_reduction: float | None = field(
        default=None,
        metadata={
            "help": "Instead of a FLOPs target: fraction of the dense model's forward latency to remove, in (0, 1), "
            "on latency_device at latency_batch_size. Every method prunes until the latency predicted by a profile "
            "(per-layer latency tables measured at the start of the run, or latency_profile) meets it."
        },
    )
    latency_batch_size: int | None = field(
        default=None,
        metadata={"help": "Images per forward of the latency target and measurements. Default: 64 on CPU, 128 on CUDA."},
    )
    latency_device: str | None = field(
        default=None,
        metadata={"help": "Device the latency is measured and targeted on, e.g. 'cpu' from a GPU run. Default: the "
                  "training device."},
    )
    latency_profile: str | None = field(
        default=None,
        metadata={
            "help": "A latency_profile.json to reuse (written into output_dir by an earlier run, possibly on the "
            "deployment machine) instead of measuring one; it must have been measured for this model. Default: "
            "reuse output_dir's if it fits, else measure."
        },
    )
    layer_prune_limit: float = field(
        default=0.75,
        metadata={"help": "Largest fraction of any coupled group's channels (or heads) that may be removed."},
    )
    round_to: str = field(
        default="auto",
        metadata={
            "help": "Every pruned group keeps a multiple of this many channels (or all of them): kernels work on "
            "blocks of channels, so in-between widths cost as much as the next multiple. 'auto': the training "
            "device's block (16 on an AVX-512 CPU, 8 on an AVX2 CPU or CUDA), at most the largest power of two "
            "<= half the width of a convolution group two blocks wide or more, else <= a quarter of it (a "
            "16-channel group: 8 on AVX2, 4 on AVX-512). 1 keeps arbitrary widths. Attention "
            "heads are whole units and never rounded."
        },
    )
    latency_aware_ranking: bool = field(
        default=False,
        metadata={
            "help": "Rank units by saliency per millisecond that removing a unit of their group saves (the latency "
            "profile's prediction; measured at the start of the run like target_latency_reduction's, or "
            "latency_profile), instead of by saliency alone: the target is met by removing the units that cost "
            "the most time for what they are worth, which buys more speed per MACs cut. A departure from the "
            "papers' criteria, off by default. Not with laasp, which chooses by subset loss per step."
        },
    )
    uniform_widths: bool = field(
        default=False,
        metadata={
            "help": "Groups at the same place of repeated blocks (every block's heads, every block's MLP, the "
            "blocks of a CNN stage) keep the same width, so that a transformers model's own config describes "
            "the slim model and it loads without hf_prune. Not with laasp (one group per step)."
        },
    )
    prune_epoch: float | None = field(
        default=None,
        metadata={
            "help": "Epoch (fractions allowed) at which one-shot methods prune. Default: a quarter of the run for "
            "magnitude and random, half of it for tp_groupnorm (its sparsity training)."
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
            "channels, 'reset' starts the optimizer afresh.",
            "choices": OPTIMIZER_STATE_POLICIES,
        },
    )
    eval_around_prune: bool = field(
        default=False,
        metadata={"help": "Evaluate right before and right after prune events (recorded in the event); which "
                          "events: eval_around_prune_events."},
    )
    eval_around_prune_events: str = field(
        default="last",
        metadata={
            "help": "'last' evaluates around each method's last prune only (LAASP's final search step: its other "
            "steps would double a benchmark's wall time), 'all' around every prune event.",
            "choices": EVAL_AROUND_PRUNE_EVENTS,
        },
    )
    eval_after_prune_bn_batches: int = field(
        default=8,
        metadata={
            "help": "For the evaluations right before and right after a prune, re-estimate BatchNorm statistics on "
            "this many training batches first (weights untouched, statistics restored afterwards), so the two are "
            "comparable; 0 evaluates with the running statistics as they are."
        },
    )
    resume_with_changed_pruning: bool = field(
        default=False,
        metadata={
            "help": "Resume a checkpoint even when it has no pruning_state.json or was written with other pruning "
            "settings, another model or number of classes (refused by default: the result would be neither run)."
        },
    )
    card_latency: bool = field(
        default=True,
        metadata={
            "help": "At the final save_model, measure the CPU latency of the dense and the slim model "
            "(batch 1 and 64) for the model card."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: image transforms produce the model inputs on the fly."}
    )

    def __post_init__(self) -> None:
        self._validate_targets(method_class(self.pruning_method).is_dense)
        if self.prune_epoch is not None and not self.prune_epoch >= 0:  # NaN fails too
            raise ValueError(f"prune_epoch is an epoch and must be >= 0 (or unset for the default), got {self.prune_epoch}")
        if not 0.0 < self.layer_prune_limit < 1.0:
            raise ValueError(f"layer_prune_limit must lie in (0, 1), got {self.layer_prune_limit}")
        if self.optimizer_state_after_prune not in OPTIMIZER_STATE_POLICIES:
            raise ValueError(
                f"optimizer_state_after_prune must be one of {OPTIMIZER_STATE_POLICIES}, "
                f"got '{self.optimizer_state_after_prune}'"
            )
        if self.eval_around_prune_events not in EVAL_AROUND_PRUNE_EVENTS:
            raise ValueError(
                f"eval_around_prune_events must be one of {EVAL_AROUND_PRUNE_EVENTS}, got '{self.eval_around_prune_events}'"
            )
        if self.eval_after_prune_bn_batches < 0:
            raise ValueError(f"eval_after_prune_bn_batches must be >= 0, got {self.eval_after_prune_bn_batches}")
        self.round_to = str(parse_round_to(self.round_to) or AUTO)
        if self.uniform_widths and not method_class(self.pruning_method).supports_uniform_widths:
            raise ValueError(
                f"pruning_method='{self.pruning_method}' cannot keep widths uniform (uniform_widths=True): use "
                f"one of {[m for m in list_methods() if method_class(m).supports_uniform_widths]}, or drop uniform_widths"
            )
        if self.latency_aware_ranking and not method_class(self.pruning_method).supports_latency_aware_ranking:
            raise ValueError(
                f"pruning_method='{self.pruning_method}' cannot rank units by latency (latency_aware_ranking=True): use "
                f"one of {[m for m in list_methods() if method_class(m).supports_latency_aware_ranking]}, or drop "
                "latency_aware_ranking (target_latency_reduction works with every method)"
            )
        validate_method_arguments(self)
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
        self._validate_launch()
        if self.use_cpu or not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on every loader
        super().__post_init__()

    @property
    def tracks_latency(self) -> bool:
        """A latency target, profile or ranking is set: latency is predicted and measured at every prune."""
        return (self.target_latency_reduction is not None or self.latency_profile is not None
                or self.latency_aware_ranking)

    @property
    def target_reduction(self) -> float:
        """The reduction the methods prune to: of the latency when that target is set, else of the MACs."""
        if self.target_latency_reduction is not None:
            return self.target_latency_reduction
        return self.target_flops_reduction

    def _validate_targets(self, dense: bool) -> None:
        if self.target_flops_reduction is not None and self.target_latency_reduction is not None:
            raise ValueError(
                f"target_flops_reduction ({self.target_flops_reduction}) and target_latency_reduction "
                f"({self.target_latency_reduction}) are exclusive: set only one"
            )
        if self.target_latency_reduction is None and self.target_flops_reduction is None:
            self.target_flops_reduction = DEFAULT_TARGET_FLOPS_REDUCTION
        for name, what in (("target_flops_reduction", "MACs"), ("target_latency_reduction", "latency")):
            value = getattr(self, name)
            if not dense and value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {value}: it is the fraction of {what} to remove "
                                 "(0.5 halves it)")
        if self.latency_batch_size is not None and self.latency_batch_size < 1:
            raise ValueError(
                f"latency_batch_size must be at least 1 (or unset for the default), got {self.latency_batch_size}"
            )
        if self.latency_device is not None:
            try:
                torch.device(self.latency_device)
            except RuntimeError as error:
                raise ValueError(
                    f"latency_device '{self.latency_device}' is not a device ({error}): e.g. 'cpu' or 'cuda'"
                ) from None
        if self.latency_profile is not None and not os.path.isfile(self.latency_profile):
            raise ValueError(f"latency_profile {self.latency_profile} is not a file: pass the latency_profile.json "
                             "of an earlier run, or leave it unset to measure one")

    @classmethod
    def argument_groups(cls) -> dict[str, list[str]]:
        """Field names by heading: the settings of every method first, then each method's own.

        ``HfArgumentParser`` sees one dataclass; the CLI uses this to show the fields under headings.
        """
        inherited = {f.name for f in fields(TrainingArguments)}  # remove_unused_columns is only re-defaulted here
        groups = {"Pruning": [f.name for f in fields(cls) if f.name in cls.__annotations__ and f.name not in inherited]}
        for name in list_methods():
            settings = method_class(name).arguments
            if settings is not None and issubclass(cls, settings):
                groups[f"Pruning method '{name}'"] = [f.name for f in fields(settings)]
        return groups

    def _validate_launch(self) -> None:
        """Several CPU processes need ``use_cpu``: without it transformers runs each one alone, silently."""
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1 and not self.use_cpu and not torch.accelerator.is_available():
            raise ValueError(
                f"launched as {processes} processes on a machine without GPU: pass --use_cpu (use_cpu=True), else "
                "every process trains its own model on all the data"
            )


