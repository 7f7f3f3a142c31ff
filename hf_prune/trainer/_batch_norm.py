"""BatchNorm statistics re-estimated for the evaluation right after a prune.

Removing channels changes what every following BatchNorm sees, so its running statistics are
stale until training has run a few dozen steps: evaluated as-is, a freshly pruned CNN often
predicts a single class whatever the method chose. Re-estimating the statistics (no weight
changes) measures what the pruned sub-network itself can still do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hf_prune.models.forward import run_model

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@contextmanager
def recalibrated_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> Iterator[int]:
    """Inside the block every BatchNorm holds statistics averaged over ``batches`` (input tensors);
    on exit the previous statistics, momenta and train/eval modes are back. Yields the number of
    BatchNorm layers recalibrated (0: nothing to do, the batches are not read)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        yield 0
        return
    modes = {m: m.training for m in model.modules()}
    saved = [(m, m.momentum, {name: getattr(m, name).clone() for name in _BUFFERS}) for m in norms]
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the batches
            norm.train()
        device = next(model.parameters()).device
        with torch.no_grad():
            for inputs in batches:
                run_model(model, inputs.to(device))
        model.eval()
        yield len(norms)
    finally:
        for norm, momentum, buffers in saved:
            norm.momentum = momentum
            for name, value in buffers.items():
                getattr(norm, name).copy_(value)
        for module, training in modes.items():
            module.training = training


def calibration_batches(
    dataset: Any, collator: Callable[[list[Any]], dict[str, Any]], batch_size: int, count: int, seed: int
) -> Iterator[torch.Tensor]:
    """``count`` batches of training images, the same on every rank and every run.

    Drawn and augmented under ``seed`` in a forked RNG: the training RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.randperm(len(dataset))[: batch_size * count].tolist()
        for start in range(0, len(order), batch_size):
            yield collator([dataset[i] for i in order[start:start + batch_size]])["pixel_values"]
