"""Evaluate a candidate prune without copying the model: output masks and a replayable prefix.

Removing units of a group physically is, in eval mode, the same as zeroing them at the output
of every module that *produces* them (conv/linear outputs, and the norm layers after them: a
BatchNorm would otherwise add its bias back): consumers then read zeros, exactly the channels
they would no longer have. :func:`mask_units` installs such forward hooks for a while.

The exception is a norm that computes statistics across channels (LayerNorm over channels,
GroupNorm): a zeroed channel still counts in its mean and variance. :func:`masking_is_exact` tells those groups apart.

:class:`PrefixCache` avoids recomputing what a candidate cannot change: everything that finishes
before the first module of the group runs. It records those modules' outputs once per batch and
replays them for every candidate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hf_prune.models.forward import run_model
from hf_prune.structure.graph import ChannelGroup
from hf_prune.structure.layer_kinds import layer_kind


def _output_channel_dim(module: nn.Module) -> int | None:
    kind = layer_kind(module)
    return None if kind is None else kind.channel_dim


def unit_output_masks(
    model: nn.Module, group: ChannelGroup, removed_units: Sequence[int]
) -> dict[str, tuple[int, torch.Tensor]]:
    """Where to zero the outputs for removing ``removed_units`` of ``group``.

    Returns:
        module name -> (output dimension, output positions to zero), for every conv, linear or
        norm module producing the group's units. For a head group these are the head's rows of
        the query/key/value projections.
    """
    modules = dict(model.named_modules())
    removed = torch.as_tensor(list(removed_units), dtype=torch.long)
    masks: dict[str, tuple[int, torch.Tensor]] = {}
    for piece in group.slices:
        module_name, _, _ = piece.param_name.rpartition(".")
        module = modules.get(module_name)
        dim = _output_channel_dim(module) if module is not None else None
        if not piece.produces or dim is None or module_name in masks:
            continue
        masks[module_name] = (dim, piece.index[removed].flatten())
    return masks


def masking_is_exact(model: nn.Module, group: ChannelGroup) -> bool:
    """False when a norm of the group computes statistics across its channels (LayerNorm, GroupNorm).

    Zeroed channels then still shift the mean and variance of the kept ones, so a masked loss
    only approximates the loss after a physical prune.
    """
    modules = dict(model.named_modules())
    kinds = [layer_kind(modules[name]) for name in group.modules if name in modules]
    return not any(kind is not None and kind.cross_channel for kind in kinds)


@contextmanager
def mask_units(model: nn.Module, masks: Mapping[str, tuple[int, torch.Tensor]]) -> Iterator[None]:
    """Zero the given output channels of modules while the context is open (see :func:`unit_output_masks`)."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, (dim, positions) in masks.items():
            handles.append(modules[name].register_forward_hook(_zeroing_hook(dim, positions)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _zeroing_hook(dim: int, positions: torch.Tensor):
    cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        axis = dim % output.dim()
        key = (output.shape[axis], output.device, output.dtype)
        if key not in cache:
            keep = torch.ones(output.shape[axis], device=output.device, dtype=output.dtype)
            keep[positions.to(output.device)] = 0
            cache[key] = keep.view([-1] + [1] * (output.dim() - axis - 1))
        return output * cache[key]  # out of place: the module's own output may be reused by the caller

    return hook


class PrefixCache:
    """Which modules finish before a given module starts, and replaying their outputs.

    The order of calls is recorded once on ``example_inputs``. Replaying needs every module to
    run exactly once per forward (a module called twice would get the wrong cached output); for
    models where that fails, :meth:`frontier` is empty and nothing is skipped.

    Args:
        model: the model, in the structure it will be evaluated in.
        example_inputs: a small batch to record the call order on.
    """

    def __init__(self, model: nn.Module, example_inputs: Any) -> None:
        self.model = model
        self._start: dict[str, int] = {}
        self._end: dict[str, int] = {}
        self.replayable = self._record_order(example_inputs)

    def _record_order(self, example_inputs: Any) -> bool:
        clock = itertools.count()
        calls: dict[str, int] = {}

        def before(name: str):
            def hook(module, inputs):
                self._start[name] = next(clock)
                calls[name] = calls.get(name, 0) + 1
            return hook

        def after(name: str):
            def hook(module, inputs, output):
                self._end[name] = next(clock)
            return hook

        handles = []
        for name, module in self.model.named_modules():
            if name:
                handles += [module.register_forward_pre_hook(before(name)), module.register_forward_hook(after(name))]
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                run_model(self.model, example_inputs)
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        return all(count == 1 for count in calls.values())

    def frontier(self, module_names: Iterable[str]) -> list[str]:
        """The outermost modules that finish before the first of ``module_names`` starts.

        Their outputs are all a forward needs to resume at that module: replaying them skips
        the rest of the prefix (their children are never called).
        """
        starts = [self._start[n] for n in module_names if n in self._start]
        if not self.replayable or not starts:
            return []
        first = min(starts)
        done = {name for name, end in self._end.items() if end < first}
        return [name for name in done if name.rpartition(".")[0] not in done]

    @contextmanager
    def recording(self, module_names: Iterable[str]) -> Iterator[dict[str, Any]]:
        """Collect the outputs of ``module_names`` during the forwards run inside the context."""
        modules = dict(self.model.named_modules())
        outputs: dict[str, Any] = {}

        def keeper(name: str):
            def hook(module, inputs, output):
                outputs[name] = _clone(output)  # later in-place ops (x += shortcut, ReLU(inplace)) would alter it
            return hook

        handles = [modules[name].register_forward_hook(keeper(name)) for name in module_names]
        try:
            yield outputs
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def replaying(self, outputs: Mapping[str, Any]) -> Iterator[None]:
        """Make each named module return its recorded output instead of computing it."""
        modules = dict(self.model.named_modules())
        saved = {}
        try:
            for name, output in outputs.items():
                module = modules[name]
                saved[name] = module.__dict__.get("forward")  # an instance-level forward (accelerate) to restore
                module.forward = _returning(output)
            yield
        finally:
            for name, previous in saved.items():
                if previous is None:
                    del modules[name].forward
                else:
                    modules[name].forward = previous


def _returning(output: Any):
    def forward(*args: Any, **kwargs: Any) -> Any:
        return _clone(output)  # the caller may modify it in place

    return forward


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_clone(v) for v in value))  # a namedtuple
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value
