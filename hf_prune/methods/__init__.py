"""Pruning methods: each decides what to prune; the PruningTrainer applies it."""

from __future__ import annotations

from collections.abc import Callable

from hf_prune.methods.base import PruningContext, PruningMethod, PruningPlan
from hf_prune.methods.criteria import CRITERIA, Criterion, get_criterion, register_criterion, unit_weights
from hf_prune.methods.group_norm import GroupNormPruning
from hf_prune.methods.laasp import LAASPPruning
from hf_prune.methods.magnitude import MagnitudePruning
from hf_prune.methods.ocsp import OCSPruning
from hf_prune.methods.random_units import RandomPruning

METHODS: dict[str, Callable[[], PruningMethod]] = {
    "none": PruningMethod,
    "magnitude": MagnitudePruning,
    "random": RandomPruning,
    "ocsp": OCSPruning,
    "laasp": LAASPPruning,
    "tp_groupnorm": GroupNormPruning,
}


def create_method(name: str) -> PruningMethod:
    """Instantiate the method registered under ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown pruning_method '{name}': choose one of {sorted(METHODS)}")
    return METHODS[name]()


__all__ = [
    "CRITERIA",
    "METHODS",
    "Criterion",
    "GroupNormPruning",
    "LAASPPruning",
    "MagnitudePruning",
    "OCSPruning",
    "RandomPruning",
    "PruningContext",
    "PruningMethod",
    "PruningPlan",
    "create_method",
    "get_criterion",
    "register_criterion",
    "unit_weights",
]
