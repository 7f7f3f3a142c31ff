"""Pruning methods: each decides what to prune; the PruningTrainer applies it."""

from __future__ import annotations

from collections.abc import Callable

from hf_prune.methods.base import PruningContext, PruningMethod, PruningPlan
from hf_prune.methods.criteria import CRITERIA, Criterion, get_criterion, register_criterion, unit_weights
from hf_prune.methods.laasp import LAASPPruning
from hf_prune.methods.magnitude import MagnitudePruning

METHODS: dict[str, Callable[[], PruningMethod]] = {
    "none": PruningMethod,
    "magnitude": MagnitudePruning,
    "laasp": LAASPPruning,
}
PLANNED_METHODS = ("ocsp",)


def create_method(name: str) -> PruningMethod:
    """Instantiate the method registered under ``name``."""
    if name in PLANNED_METHODS:
        raise NotImplementedError(f"pruning_method='{name}' is not implemented yet; available: {sorted(METHODS)}")
    if name not in METHODS:
        raise ValueError(f"unknown pruning_method '{name}': choose one of {sorted(METHODS) + list(PLANNED_METHODS)}")
    return METHODS[name]()


__all__ = [
    "CRITERIA",
    "METHODS",
    "Criterion",
    "LAASPPruning",
    "MagnitudePruning",
    "PruningContext",
    "PruningMethod",
    "PruningPlan",
    "create_method",
    "get_criterion",
    "register_criterion",
    "unit_weights",
]
