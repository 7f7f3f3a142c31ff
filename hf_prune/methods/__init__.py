"""Pruning methods: each decides what to prune; the PruningTrainer applies it."""

from __future__ import annotations

from collections.abc import Callable

from hf_prune.methods.base import PruningContext, PruningMethod, PruningPlan
from hf_prune.methods.magnitude import MagnitudePruning
from hf_prune.methods.ocsp import OCSPruning

METHODS: dict[str, Callable[[], PruningMethod]] = {
    "none": PruningMethod,
    "magnitude": MagnitudePruning,
    "ocsp": OCSPruning,
}
PLANNED_METHODS = ("laasp",)


def create_method(name: str) -> PruningMethod:
    """Instantiate the method registered under ``name``."""
    if name in PLANNED_METHODS:
        raise NotImplementedError(f"pruning_method='{name}' is not implemented yet; available: {sorted(METHODS)}")
    if name not in METHODS:
        raise ValueError(f"unknown pruning_method '{name}': choose one of {sorted(METHODS) + list(PLANNED_METHODS)}")
    return METHODS[name]()


__all__ = ["METHODS", "MagnitudePruning", "OCSPruning", "PruningContext", "PruningMethod", "PruningPlan", "create_method"]
