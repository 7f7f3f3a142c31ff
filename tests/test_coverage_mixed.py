"""Mixed-kernel convolutions (MixNet's MixedConv2d): split into parts, each part pruned, sizes kept in step."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torch import nn

import hf_prune.structure.latency_model as latency_model
from hf_prune import PruningArguments
from hf_prune.structure import (
    LatencyModel,
    MacsModel,
    StructureGraph,
    count_macs_params,
    measure_profile,
    select_lowest,
    unit_saliency,
)

_MIXNET = "mixnet_s"


def _mixnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(_MIXNET, num_classes=4).eval()


def _resnest() -> torch.nn.Module:
    """ResNeSt-14d at a quarter of its widths: its 3x3 convs are grouped (radix 2), 16 -> 32 channels in layer1."""
    torch.manual_seed(0)
    return timm.create_model("resnest14d", num_classes=4, channels=(16, 32, 64, 128), stem_width=8).eval()


def _mixed_convs(model: torch.nn.Module) -> dict[str, timm.layers.MixedConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, timm.layers.MixedConv2d)}


def test_every_part_of_a_mixed_conv_is_pruned_with_equal_part_widths(rebuild):
    model, x = _mixnet(), torch.randn(2, 3, 32, 32)
    graph = StructureGraph(model, x[:1])
    in_groups = {name for g in graph.groups for name in g.modules}
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n != "conv_head"]
    assert set(convs) <= in_groups  # before: MixedConv2d's split kept nearly every group whole
    macs_model = MacsModel(graph, x[:1])
    plan = {g.name: list(range(1, g.num_units, 2)) or [0] for g in graph.groups}  # every second unit
    predicted = macs_model.macs({g.name: g.num_units - len(plan[g.name]) for g in graph.groups})

    graph.apply(plan)

    macs_after = count_macs_params(model, x[:1])[0]
    assert macs_after < 0.6 * macs_model.base_macs
    assert abs(predicted - macs_after) / macs_after < 0.01
    for name, mixed in _mixed_convs(model).items():
        parts = list(mixed.values())
        assert mixed.splits == [part.in_channels for part in parts], name
        assert len({part.in_channels for part in parts}) == 1, name  # equal parts stay equal
    assert model(x).shape == (2, 4)

    with torch.no_grad():  # the reloaded split sizes follow the reshaped parts
        assert torch.equal(rebuild(model, _mixnet)(x), model(x))


def test_grouped_conv_input_loses_the_same_position_in_every_group_as_zeroing_it():
    """ResNeSt's split attention: a grouped conv with more outputs than inputs keeps its outputs."""
    model = _resnest()
    x = torch.randn(2, 3, 32, 32)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.name == "layer1.0.conv1")
    assert group.num_units == 8 and "layer1.0.conv2.conv" in group.modules  # 16 channels, 2 per unit
    kept = list(range(1, 8, 2))
    zeroed = [c for c in range(16) if c % 8 not in kept]
    reference = _resnest()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference.layer1[0].bn1.weight[zeroed] = 0  # conv1's removed channels then read zero
        reference.layer1[0].bn1.bias[zeroed] = 0
        expected = reference(x)

    graph.apply({group.name: kept})

    conv = model.layer1[0].conv2.conv
    assert (conv.in_channels, conv.out_channels, conv.groups, conv.weight.shape[1]) == (8, 32, 2, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("build", [_mixnet, _resnest], ids=["mixnet", "resnest"])
def test_prunes_to_half_the_macs_under_the_default_floor_and_reloads_equal(build, rebuild):
    model, x = build(), torch.randn(2, 3, 32, 32)
    graph = StructureGraph(model, x[:1])
    macs_model = MacsModel(graph, x[:1])
    scores = {g.name: unit_saliency(model, g) for g in graph.groups}
    floor = PruningArguments(output_dir="unused").layer_prune_limit
    selection = select_lowest(graph.groups, scores, macs_model, 0.5, max_prune_ratio=floor)

    graph.apply(selection.keep)

    assert 0.5 <= 1 - count_macs_params(model, x[:1])[0] / macs_model.base_macs < 0.51
    with torch.no_grad():
        assert torch.equal(rebuild(model, build)(x), model(x))


class _GroupedInputs(nn.Module):
    """conv(3->8) -> grouped conv(8->16, 2 groups) -> linear: conv1 loses channel pairs, one per group."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.conv1(x))).mean((2, 3)))


def test_latency_model_reads_a_grouped_conv_input_as_all_its_groups(monkeypatch):
    timed = []

    def layer_ms(signature, out_width, in_width, batch_size, device):
        timed.append((json.loads(signature).get("groups"), in_width))
        return out_width * in_width / 100

    monkeypatch.setattr(latency_model, "time_layer_ms", layer_ms)
    monkeypatch.setattr(latency_model, "measure_latency_ms", lambda *args, **kwargs: 0.0)
    model, x = _GroupedInputs().eval(), torch.randn(1, 3, 8, 8)
    graph = StructureGraph(model, x)
    (group,) = graph.groups
    assert group.name == "conv1" and group.num_units == 4  # channel j goes with j + 4

    latency = LatencyModel(graph, measure_profile(graph, x, batch_size=1, device="cpu", disable_tqdm=True), x)

    assert {width for groups, width in timed if groups == 2} == {2, 4, 6, 8}  # whole pairs of channels
    fc_ms = 4 * 16 / 100
    for removed in range(4):
        kept = 8 - 2 * removed
        expected = (kept * 3 + 16 * kept) / 100 + fc_ms
        assert latency.cost({group.name: removed}) == pytest.approx(expected)
