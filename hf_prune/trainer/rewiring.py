"""Rewiring a Trainer after a physical prune: the one module that knows accelerate's internals.

Torch-Pruning replaces parameters by new ``nn.Parameter`` objects, so everything built over the
old ones is stale after a prune: the optimizer (and its momentum/Adam state), the LR scheduler
that wraps it, accelerate's registries of prepared objects and the DDP/compiled wrapper. This
module rebuilds them; it also lifts accelerate's mixed-precision forward wrapper for decisions
that must be made in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import Trainer


def rebuild_optimizer(
    trainer: Trainer, old_params: Mapping[str, nn.Parameter], index_maps: Mapping[str, torch.Tensor], slice_state: bool
) -> None:
    """New optimizer over ``trainer.model``'s parameters, the LR scheduler at the same step and LR.

    Args:
        old_params: the parameters before the prune, by name.
        index_maps: per parameter, the flat index of the old element each new element came from.
        slice_state: carry momentum/Adam state over to the surviving elements (else start afresh).
    """
    if trainer.optimizer is None:
        return  # pruned before training started: train() builds everything
    old_optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    current_lrs = [group["lr"] for group in old_optimizer.param_groups]
    scheduler_state = trainer.lr_scheduler.state_dict() if trainer.lr_scheduler is not None else None
    accelerator = trainer.accelerator
    accelerator._optimizers = [o for o in accelerator._optimizers if o is not trainer.optimizer]
    accelerator._schedulers = [s for s in accelerator._schedulers if s is not trainer.lr_scheduler]

    trainer.optimizer = trainer.lr_scheduler = None
    trainer.create_optimizer()
    new_optimizer = trainer.optimizer
    if slice_state:
        slice_optimizer_state(old_optimizer, new_optimizer, old_params, dict(trainer.model.named_parameters()), index_maps)
    trainer.optimizer = accelerator.prepare_optimizer(new_optimizer)
    trainer.create_scheduler(num_training_steps=trainer.state.max_steps, optimizer=trainer.optimizer)
    if scheduler_state is not None:
        trainer.lr_scheduler.load_state_dict(scheduler_state)
    for group, lr in zip(new_optimizer.param_groups, current_lrs):
        group["lr"] = lr  # a new scheduler sets its step-0 LR; continue at the current one
    for attr in ("model", "optimizer", "lr_scheduler"):
        setattr(trainer.callback_handler, attr, getattr(trainer, attr))


def rewrap_model(trainer: Trainer) -> None:
    """Wrap the pruned model again (DDP buckets and compiled graphs hold the old tensors)."""
    if trainer.model_wrapped is trainer.model:
        return
    accelerator = trainer.accelerator
    accelerator._models = [m for m in accelerator._models if m is not trainer.model_wrapped]
    original_forward = getattr(trainer.model, "_original_forward", None)
    if original_forward is not None:
        trainer.model.forward = original_forward  # accelerate re-applies its autocast wrapper once
    trainer.model_wrapped = accelerator.prepare_model(trainer.model, device_placement=False)


def slice_optimizer_state(
    old: torch.optim.Optimizer,
    new: torch.optim.Optimizer,
    old_params: Mapping[str, nn.Parameter],
    new_params: Mapping[str, nn.Parameter],
    index_maps: Mapping[str, torch.Tensor],
) -> None:
    """Carry each parameter's optimizer state over to its surviving elements."""
    for name, new_param in new_params.items():
        state = old.state.get(old_params.get(name))
        if not state:
            continue
        old_shape = old_params[name].shape
        flat_index = index_maps[name].flatten()
        new.state[new_param] = {
            key: value.flatten()[flat_index].view(new_param.shape).clone()
            if torch.is_tensor(value) and value.shape == old_shape
            else value
            for key, value in state.items()
        }


@contextmanager
def full_precision(model: nn.Module) -> Iterator[None]:
    """Run ``model``'s forwards in fp32 while the context is open, even under mixed precision.

    Decisions (candidate losses) must not depend on bf16/fp16 rounding. Accelerate's mixed
    precision replaces ``model.forward`` by an autocast-wrapped one and keeps the original as
    ``model._original_forward``; that inner autocast would re-enable what an outer
    ``torch.autocast(enabled=False)`` turns off, so the original forward is put back for a while
    as well.
    """
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if original is not None:
        model.forward = original
    try:
        with torch.autocast(device_type=next(model.parameters()).device.type, enabled=False):
            yield
    finally:
        if original is not None:
            model.forward = wrapped
