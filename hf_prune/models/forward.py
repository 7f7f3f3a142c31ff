"""Calling a timm or transformers image classifier the same way, and reading its logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    """Call ``model`` on a tensor, a sequence of positional inputs or a mapping of keyword inputs."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, torch.Tensor):
        return model(*example_inputs)
    return model(example_inputs)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a timm (bare tensor) or transformers (``ModelOutput``) forward."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, Mapping):
        return next(v for v in output.values() if isinstance(v, torch.Tensor))
    return output[0]
