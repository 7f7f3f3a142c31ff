"""Mixed-kernel convolutions (MixNet's MixedConv2d): split into parts, each part pruned, sizes kept in step."""

from __future__ import annotations

import json

import timm
import torch

import hf_prune
from hf_prune.structure import MacsModel, StructureGraph, apply_shape_spec, count_macs_params, export_shape_spec

_MIXNET = "mixnet_s"


def _mixnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(_MIXNET, num_classes=4).eval()


def _mixed_convs(model: torch.nn.Module) -> dict[str, timm.layers.MixedConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, timm.layers.MixedConv2d)}


def test_every_part_of_a_mixed_conv_is_pruned_with_equal_part_widths():
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

    fresh = _mixnet()
    spec = json.loads(json.dumps(export_shape_spec(model, reference=fresh)))
    apply_shape_spec(fresh, spec)  # the split sizes follow the reshaped parts
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_mixnet_prunes_to_half_the_macs_with_default_settings_and_reloads_equal(make_trainer, tmp_path):
    model = _mixnet()
    x = torch.randn(2, 3, 32, 32)
    macs_before = count_macs_params(model, x[:1])[0]
    trainer = make_trainer(tmp_path, model=model, max_steps=2, prune_epoch=0.0)  # target_flops_reduction=0.5
    trainer.train()

    slim = trainer.model.eval()
    reduction = 1 - count_macs_params(slim, x[:1])[0] / macs_before
    assert 0.5 <= reduction < 0.52
    trainer.save_model(str(tmp_path / "slim"))
    reloaded = hf_prune.AutoPrunedModel.from_pretrained(str(tmp_path / "slim")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), slim(x))
