"""Costs of a candidate plan: the :class:`CostModel` protocol and its analytic MACs model.

A selection (``select_lowest``) and the methods only ask a cost model what the model costs now
and after removing some units of some groups; :class:`MacsModel` answers in MACs,
:class:`~hf_prune.structure.latency_model.LatencyModel` in measured milliseconds.

:class:`MacsModel` needs no copying, pruning or re-tracing of the model.

One measured count per module (``FlopCounterMode``) is scaled by the fraction of input and
output channels a plan keeps: a convolution or linear layer costs ``out * in * k`` MACs per
position, so removing channels scales its cost by the kept fractions of both dimensions. The
attention core (QK^T and AV) of a head group scales with the fraction of heads kept. Searches
call :meth:`MacsModel.macs` thousands of times; it is pure arithmetic over a few hundred terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from hf_prune.structure.attention import find_attention
from hf_prune.structure.counting import count_module_macs
from hf_prune.structure.graph import StructureGraph
from hf_prune.structure.layer_kinds import layer_kind


@dataclass(frozen=True)
class _Shrink:
    """Group ``group`` removes ``per_unit`` of the ``size`` entries of one dimension per unit."""

    group: str
    per_unit: int
    size: int


@dataclass(frozen=True)
class _Term:
    macs: int
    dims: tuple[tuple[_Shrink, ...], ...]  # one tuple of shrinks per dimension that scales the cost


class CostModel(Protocol):
    """A cost of the model now (``base_cost``) and after removing units (``cost``).

    Subclasses get :meth:`reduction`. ``quantity`` names the cost in messages ("MACs").
    """

    quantity: str

    @property
    def base_cost(self) -> float:
        """The cost of the model as it is now."""

    def cost(self, removed_units: Mapping[str, int]) -> float:
        """The cost after removing ``removed_units[group]`` units from each named group."""

    def reduction(self, removed_units: Mapping[str, int]) -> float:
        """Fraction of the current cost that removing these units saves."""
        return 1.0 - self.cost(removed_units) / self.base_cost


class MacsModel(CostModel):
    """Predicts the MACs of the graph's model after removing some units of some groups.

    Args:
        graph: the structure of the model now.
        example_inputs: the input the MACs are counted for (batch 1 gives per-image MACs).
    """

    quantity = "MACs"

    def __init__(self, graph: StructureGraph, example_inputs: Any) -> None:
        per_module = count_module_macs(graph.model, example_inputs)
        self.base_macs = per_module[""]
        self._terms = _layer_terms(graph, per_module) + _attention_terms(graph, per_module)
        self._constant = self.base_macs - sum(t.macs for t in self._terms)

    def macs(self, removed_units: Mapping[str, int]) -> float:
        """MACs after removing ``removed_units[group]`` units from each named group."""
        total = float(self._constant)
        for term in self._terms:
            cost = float(term.macs)
            for shrinks in term.dims:
                cost *= max(0.0, kept_size(shrinks, removed_units) / shrinks[0].size)
            total += cost
        return total

    @property
    def base_cost(self) -> float:
        return float(self.base_macs)

    def cost(self, removed_units: Mapping[str, int]) -> float:
        return self.macs(removed_units)

    def macs_per_unit(self, group: str) -> float:
        """MACs saved by removing one unit of ``group`` alone."""
        return self.base_macs - self.macs({group: 1})


def _scales_with_widths(module: nn.Module) -> bool:
    kind = layer_kind(module)
    return kind is not None and kind.macs_scale_with_widths


def width_shrinks(graph: StructureGraph) -> dict[tuple[str, int], tuple[_Shrink, ...]]:
    """``{(parameter, dim): shrinks}``: which groups remove how many entries of each sliced dimension."""
    shrinks: dict[tuple[str, int], dict[str, _Shrink]] = {}
    params = dict(graph.model.named_parameters())
    for group in graph.groups:
        for s in group.slices:
            dim = s.dim % params[s.param_name].dim()
            # A depthwise conv appears twice in its group (as producer and consumer): count once.
            shrinks.setdefault((s.param_name, dim), {})[group.name] = _Shrink(
                group.name, s.index.shape[1], params[s.param_name].shape[dim]
            )
    return {key: tuple(by_group.values()) for key, by_group in shrinks.items()}


def kept_size(shrinks: tuple[_Shrink, ...], removed_units: Mapping[str, int]) -> int:
    """Entries of one dimension left after removing ``removed_units`` (the dimension's size without shrinks)."""
    return shrinks[0].size - sum(removed_units.get(s.group, 0) * s.per_unit for s in shrinks)


def _layer_terms(graph: StructureGraph, per_module: Mapping[str, int]) -> list[_Term]:
    """One term per conv/linear layer, scaled on its output and input dimensions."""
    shrinks = width_shrinks(graph)
    terms = []
    for name, module in graph.model.named_modules():
        if not _scales_with_widths(module) or name not in per_module:
            continue
        weight = f"{name}.weight"
        dims = tuple(shrinks[(weight, d)] for d in (0, 1) if (weight, d) in shrinks)
        terms.append(_Term(per_module[name], dims))
    return terms


def _attention_terms(graph: StructureGraph, per_module: Mapping[str, int]) -> list[_Term]:
    """The attention core of each attention module, scaled by the fraction of heads kept."""
    head_group = {
        s.param_name: g for g in graph.groups if g.kind == "head" for s in g.slices if s.produces
    }
    terms = []
    for name, attention, family in find_attention(graph.model):
        linear_macs = sum(
            per_module.get(f"{name}.{child}", 0)
            for child, m in attention.named_modules()
            if child and _scales_with_widths(m)
        )
        core = per_module.get(name, 0) - linear_macs
        projection = graph.name_of(family.head_projections(attention)[0])
        group = head_group.get(f"{projection}.weight")
        if core <= 0 or group is None:
            continue
        terms.append(_Term(core, ((_Shrink(group.name, 1, group.num_units),),)))
    return terms
