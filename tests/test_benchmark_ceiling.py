"""benchmarks/benchmark_speedup_ceiling.py: the searched widths respect the constraints, the built models
have the MACs the search promised (by an independent count), and the best predicted ratio comes first."""

from __future__ import annotations

import math

import timm
import torch

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import StructureGraph, count_macs_params
from hf_prune.structure.cost import MacsModel

INPUT = torch.zeros(1, 3, 32, 32)


def _graph() -> StructureGraph:
    torch.manual_seed(0)
    return StructureGraph(timm.create_model("cifar_resnet20", num_classes=10).eval(), INPUT)


class _StageOneIsSlow:
    """A stand-in latency model: a unit of the first stage costs ten times any other unit."""

    def __init__(self, graph: StructureGraph) -> None:
        self._weights = {g.name: 10.0 if g.name.startswith(("conv1", "layer1")) else 1.0 for g in graph.groups}
        self._units = {g.name: g.num_units for g in graph.groups}

    def reduction(self, removed: dict[str, int]) -> float:
        cost = sum(w * (self._units[n] - removed.get(n, 0)) for n, w in self._weights.items())
        return 1 - cost / sum(w * self._units[n] for n, w in self._weights.items())


def test_stacks_tie_a_stages_blocks_and_try_aligned_widths_above_the_floor(load_script):
    script = load_script("benchmarks/benchmark_speedup_ceiling.py")
    graph = _graph()
    stacks = script.search_stacks(graph, "4", 0.75, 3)
    names = [name for stack in stacks for name in stack.names]
    assert sorted(names) == sorted(g.name for g in graph.groups)  # every group, once
    assert ("layer2.0.conv1", "layer2.1.conv1", "layer2.2.conv1") in [stack.names for stack in stacks]
    units = {g.name: g.num_units for g in graph.groups}
    for stack in stacks:
        full = units[stack.names[0]]
        assert stack.widths[-1] == full and len(stack.widths) <= 3
        assert all(w % 4 == 0 or w == full for w in stack.widths)
        assert stack.widths[0] >= math.ceil(full * 0.25)


def test_the_best_predicted_allocation_is_built_with_the_macs_the_search_counted(load_script):
    script = load_script("benchmarks/benchmark_speedup_ceiling.py")
    graph = _graph()
    stacks = script.search_stacks(graph, "4", 0.75, 4)
    latency = _StageOneIsSlow(graph)
    best = script.best_allocations(graph, stacks, MacsModel(graph, INPUT), latency, 0.5, 0.05, 3)
    ratios = [(1 - macs) / (1 - predicted) for macs, predicted, _ in best]
    assert len(best) == 3 and ratios == sorted(ratios, reverse=True)
    macs_reduction, _, removed = best[0]
    assert 0.5 <= macs_reduction <= 0.55
    assert removed["conv1"] == 12  # the slow stage's residual channels go to the floor first
    slim = script.built(graph.model, INPUT, removed)
    dense_macs, slim_macs = count_macs_params(graph.model, INPUT)[0], count_macs_params(slim, INPUT)[0]
    assert math.isclose(1 - slim_macs / dense_macs, macs_reduction, rel_tol=1e-6)
    assert slim.conv1.out_channels == 16 - removed["conv1"] and graph.model.conv1.out_channels == 16
