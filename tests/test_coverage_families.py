"""Architecture patterns of the coverage sweep that need more than torch-pruning's groups, at tiny sizes."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models.ghostnet import GhostModuleV2
from torch import nn

from hf_prune.structure import (
    MacsModel,
    StructureGraph,
    apply_shape_spec,
    count_macs_params,
    export_shape_spec,
    select_lowest,
    unit_saliency,
)


def _prune_to_half_and_reload(build) -> StructureGraph:
    """Prune ``build()`` to 50 % MACs under the default 25 % floor; check counted MACs and the shape-spec reload."""
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(2, 3, 64, 64)
    graph = StructureGraph(model, x[:1])
    macs_model = MacsModel(graph, x[:1])
    scores = {g.name: unit_saliency(model, g) for g in graph.groups}
    selection = select_lowest(graph.groups, scores, macs_model, 0.5, max_prune_ratio=0.75)

    graph.apply(selection.keep)

    reached = 1 - count_macs_params(model, x[:1])[0] / macs_model.base_macs
    assert 0.5 <= reached < 0.51
    assert reached == pytest.approx(selection.reduction, abs=1e-9)  # the analytic MACs are exact
    assert model(x).shape == (2, 10)
    fresh = build().eval()
    apply_shape_spec(fresh, json.loads(json.dumps(export_shape_spec(model, reference=fresh))))
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    return graph


def test_ghost_modules_lose_a_channel_with_its_cheap_copy():
    """A ghost module concatenates channels and their depthwise copies: a unit removes a channel and its copy."""
    def build():
        return timm.create_model("ghostnet_050", num_classes=10)

    torch.manual_seed(0)
    graph = StructureGraph(build().eval(), torch.randn(1, 3, 64, 64))
    # blocks.1.0.conv_dw reads ghost1's concatenation of 12 primary channels and their 12 copies.
    group = next(g for g in graph.groups if g.name == "blocks.1.0.conv_dw")
    slices = {s.param_name: s for s in group.slices}
    assert group.num_units == 12
    assert slices["blocks.1.0.conv_dw.weight"].index[3].tolist() == [3, 15]
    assert slices["blocks.1.0.ghost1.primary_conv.0.weight"].index[3].tolist() == [3]
    assert slices["blocks.1.0.ghost1.cheap_operation.0.weight"].index[3].tolist() == [3]

    _prune_to_half_and_reload(build)


class _GatedGhost(nn.Module):
    """GhostNetV2's module: the concatenation, cut to its width, times a gate from a side branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.ghost = GhostModuleV2(16, 32)
        self.conv = nn.Conv2d(32, 24, 3, padding=1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.ghost(self.stem(x))).mean((2, 3)))


def test_gated_ghost_module_loses_a_channel_with_its_copy_and_gate():
    torch.manual_seed(0)
    model, x = _GatedGhost().eval(), torch.randn(2, 3, 16, 16)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if any(s.param_name == "conv.weight" and s.dim == 1 for s in g.slices))
    slices = {(s.param_name, s.dim): s for s in group.slices}
    assert group.num_units == 16
    assert slices[("conv.weight", 1)].index[5].tolist() == [5, 21]
    assert slices[("ghost.short_conv.4.weight", 0)].index[5].tolist() == [5, 21]  # the gate's two channels
    keep = {g.name: list(range(1, g.num_units, 2)) for g in graph.groups}

    graph.apply(keep)

    assert model.conv.in_channels == 16 and model(x).shape == (2, 10)
    fresh = _GatedGhost().eval()
    apply_shape_spec(fresh, json.loads(json.dumps(export_shape_spec(model, reference=fresh))))
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
