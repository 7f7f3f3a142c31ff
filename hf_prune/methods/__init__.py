"""Pruning methods: each decides what to prune; the PruningTrainer applies it.

Importing this package registers the built-in methods; add one with ``@register_method``.
"""

from __future__ import annotations

from hf_prune.methods._registry import create_method, list_methods, method_class, register_method
from hf_prune.methods.base import NoPruning, PruningContext, PruningMethod, PruningPlan
from hf_prune.methods.criteria import CRITERIA, Criterion, get_criterion, register_criterion, unit_weights
from hf_prune.methods.magnitude import MagnitudePruning
from hf_prune.methods.random_units import RandomPruning
from hf_prune.methods.ocsp import OCSPArguments, OCSPruning
from hf_prune.methods.laasp import LAASPArguments, LAASPPruning
from hf_prune.methods.group_norm import GroupNormArguments, GroupNormPruning

__all__ = [
    "CRITERIA",
    "Criterion",
    "GroupNormArguments",
    "GroupNormPruning",
    "LAASPArguments",
    "LAASPPruning",
    "MagnitudePruning",
    "NoPruning",
    "OCSPArguments",
    "OCSPruning",
    "PruningContext",
    "PruningMethod",
    "PruningPlan",
    "RandomPruning",
    "create_method",
    "get_criterion",
    "list_methods",
    "method_class",
    "register_criterion",
    "register_method",
    "unit_weights",
]
