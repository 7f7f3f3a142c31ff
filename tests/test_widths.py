"""Hardware-aligned widths (``round_to``): multiples per group, rounded selection for every method and family."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import timm
import torch
from torch import nn
from transformers import HfArgumentParser, ViTConfig, ViTForImageClassification

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import AutoPrunedModel, ModelSource, PruningArguments, save_pretrained
from hf_prune.methods import create_method
from hf_prune.methods.laasp import LAASPPruning
from hf_prune.models.forward import logits_of
from hf_prune.structure import MacsModel, StructureGraph, count_macs_params, group_saliencies, select_lowest
from hf_prune.structure.widths import (
    auto_channel_multiple,
    device_block,
    produces_convolution_channels,
    repeated_block_ties,
    width_multiples,
)


class _LinearCost:
    """A MACs model where each unit of a group saves a fixed share: ``reduction`` is a weighted sum."""

    def __init__(self, share: dict[str, float]) -> None:
        self.share = share

    def reduction(self, removed: dict[str, int]) -> float:
        return sum(self.share[name] * n for name, n in removed.items())


def _groups(**units: int) -> list[types.SimpleNamespace]:
    return [types.SimpleNamespace(name=name, num_units=n, kind="channel") for name, n in units.items()]


def _assert_aligned(keep: dict[str, list[int]], groups, multiples: dict[str, int]) -> None:
    for group in groups:
        kept = len(keep.get(group.name, range(group.num_units)))
        assert kept > 0 and (kept == group.num_units or kept % multiples[group.name] == 0), (group.name, kept)


def test_multiples_round_to_the_nearest_and_give_back_whole_blocks():
    # a: 16 units saving 1/128 each, scored 0..15; b: 8 units saving 1/32 each, scored 0.5..7.5. Target 10 %.
    groups = _groups(a=16, b=8)
    scores = {"a": torch.arange(16.0), "b": torch.arange(8.0) + 0.5}
    cost = _LinearCost({"a": 1 / 128, "b": 1 / 32})
    # Unrounded: a0 b0 a1 b1 a2 b2 reach 11.7 %; giving back a2 (10.9 %), then a1 (10.2 %, within tolerance).
    plain = select_lowest(groups, scores, cost, 0.1, max_prune_ratio=0.75)
    assert plain.keep == {"a": list(range(1, 16)), "b": list(range(3, 8))} and plain.reduction == 1 / 128 + 3 / 32
    assert select_lowest(groups, scores, cost, 0.1, 0.75, multiples={"a": 1, "b": 1}) == plain
    # Multiples a: 4, b: 2. The same six units round to a -4, b -4 (15.6 %); giving back b's last block
    # misses the target (9.4 %), a's whole block does not (12.5 %).
    rounded = select_lowest(groups, scores, cost, 0.1, max_prune_ratio=0.75, multiples={"a": 4, "b": 2})
    assert rounded.keep == {"b": [4, 5, 6, 7]} and rounded.reduction == 4 / 32


def test_a_block_that_overshoots_is_left_for_lower_ranked_units_elsewhere():
    # big: 8 units of 1/8 each in blocks of 2, ranked first; small: 16 units of 1/64. Target 40 %.
    groups = _groups(big=8, small=16)
    scores = {"big": torch.arange(8.0), "small": torch.arange(16.0) + 10}
    cost = _LinearCost({"big": 1 / 8, "small": 1 / 64})
    # big's second block would reach 50 %: it stays, and 10 of small's units make up the rest.
    selection = select_lowest(groups, scores, cost, 0.4, 0.75, multiples={"big": 2})
    assert selection.keep == {"big": list(range(2, 8)), "small": list(range(10, 16))}
    assert selection.reduction == 2 / 8 + 10 / 64


def test_a_floor_rounded_up_to_the_whole_group_leaves_it_unpruned():
    groups = _groups(a=12, b=8)
    cost = _LinearCost({"a": 0.05, "b": 0.05})
    selection = select_lowest(groups, {"a": torch.zeros(12), "b": torch.ones(8)}, cost, 0.2, 0.5,
                              multiples={"a": 16, "b": 4})
    assert "a" not in selection.keep and selection.keep == {"b": [4, 5, 6, 7]}


def _vit() -> nn.Module:
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=128, num_labels=10))


# (model, input size, round_to, a MACs target); the tiny ViT's residual stream is never pruned: at most ~70 %
FAMILIES = {
    "cifar_resnet56": (lambda: timm.create_model("cifar_resnet56", num_classes=10), 32, "8", 0.8),
    "mobilenetv3_small_100": (lambda: timm.create_model("mobilenetv3_small_100", num_classes=10), 64, "16", 0.8),
    "hf_vit": (_vit, 32, "16", 0.6),
}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("half", [True, False], ids=["50%", "high"])
def test_every_family_keeps_multiples_meets_the_target_and_reloads_equal(family, half, tmp_path):
    build, size, round_to, high = FAMILIES[family]
    target = 0.5 if half else high
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(2, 3, size, size)
    source = ModelSource.from_model(model)
    graph = StructureGraph(model, x[:1])
    macs = MacsModel(graph, x[:1])
    multiples = width_multiples(graph.groups, round_to, "cpu", graph.model)
    assert all(multiples[g.name] == 1 for g in graph.groups if g.kind == "head")
    assert any(m > 1 for m in multiples.values())
    scores = group_saliencies(model, graph.groups)
    selection = select_lowest(graph.groups, scores, macs, target, 0.9, multiples=multiples)
    _assert_aligned(selection.keep, graph.groups, multiples)
    groups = list(graph.groups)
    graph.apply(selection.keep)
    real = 1 - count_macs_params(model, x[:1])[0] / macs.base_macs
    assert target <= real < target + 0.03 and real == pytest.approx(selection.reduction, abs=1e-9)
    kept = {g.name: len(selection.keep.get(g.name, range(g.num_units))) for g in groups}
    assert kept == {g.name: g.num_units for g in StructureGraph(model, x[:1]).groups}
    save_pretrained(model, tmp_path, source=source, pruning={"input_size": [3, size, size]})
    reloaded = AutoPrunedModel.from_pretrained(tmp_path).eval()
    expected = model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in reloaded.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(logits_of(reloaded(x)), logits_of(model(x)), rtol=1e-4, atol=1e-5)


def test_grouped_units_get_their_multiple_in_units():
    # GroupNorm(4, 16): a unit is a group of 4 channels; 8 channels are 2 units.
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    graph = StructureGraph(model, torch.randn(1, 3, 8, 8))
    multiples = width_multiples(graph.groups, "8", "cpu", graph.model)
    units = {g.name: g.num_units for g in graph.groups}
    assert units == {"0": 4, "3": 16} and multiples == {"0": 2, "3": 8}


def test_auto_uses_the_device_block_but_keeps_small_groups_halvable(monkeypatch):
    # convolution channels two blocks wide or more can be halved; narrower ones, and linear units, quartered
    assert [auto_channel_multiple(w, 16) for w in (3, 8, 16, 24, 32, 64, 512)] == [1, 2, 4, 4, 16, 16, 16]
    assert [auto_channel_multiple(w, 8) for w in (8, 16, 32, 64)] == [2, 8, 8, 8]
    assert [auto_channel_multiple(w, 8, convolution=False) for w in (16, 32, 64)] == [4, 8, 8]
    assert device_block("cuda") == 8
    for capability, block in (("AVX512", 16), ("AVX2", 8), ("DEFAULT", 8)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert device_block("cpu") == block
    model, x = timm.create_model("cifar_resnet20", num_classes=10), torch.randn(1, 3, 32, 32)
    graph = StructureGraph(model, x)
    widths = {g.num_units: width_multiples(graph.groups, "auto", "cpu", model)[g.name] for g in graph.groups}
    assert widths == {16: 8, 32: 8, 64: 8}  # the last capability set ('DEFAULT'): 8 at most
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    mlp_graph = StructureGraph(mlp, torch.randn(2, 8))
    assert not produces_convolution_channels(mlp_graph.groups[0], mlp)
    assert width_multiples(mlp_graph.groups, "auto", "cpu", mlp) == {mlp_graph.groups[0].name: 4}


@pytest.mark.parametrize("method", ["magnitude", "random", "tp_groupnorm", "ocsp", "laasp"])
def test_every_method_prunes_to_multiples_and_records_them(method, make_trainer, tmp_path):
    settings = {
        "ocsp": dict(num_train_epochs=4, ocsp_monitor_interval=0.25),
        "laasp": dict(laasp_prune_start=0.5, laasp_flops_step=0.1, laasp_subset_size=32, laasp_batch_size=16,
                      laasp_screen_fraction=0.0, laasp_recovery_epochs=0.0),
    }.get(method, dict(max_steps=4))
    trainer = make_trainer(tmp_path, pruning_method=method, round_to="8", save_strategy="steps", save_steps=1000,
                           **settings)
    trainer.train()
    trainer.save_model()
    state = json.loads((tmp_path / "pruning_state.json").read_text())
    multiples = state["width_multiples"]
    assert set(multiples) == {g.name for g in trainer.structure.groups} and set(multiples.values()) == {8}
    dense = {name: widths[0] for event in reversed(trainer.pruning_events) for name, widths in event["widths"].items()}
    for group in trainer.structure.groups:
        assert group.num_units == dense.get(group.name, group.num_units) or group.num_units % 8 == 0, group.name
    assert 0.5 <= trainer.pruning_events[-1]["macs_reduction"] < 0.56
    if method == "laasp":
        assert len(trainer.pruning_events) > 1 and all(n % 8 == 0 for n in trainer.pruning_method.step_sizes.values())


@pytest.mark.parametrize("value", ["0", "-8", "eight", "2.5", ""])
def test_bad_round_to_is_refused_with_the_choices(value, make_args, tmp_path):
    with pytest.raises(ValueError, match="round_to must be 'auto' or a whole number >= 1"):
        make_args(tmp_path, round_to=value)


def test_round_to_parses_from_the_command_line_and_python(make_args, tmp_path):
    (parsed,) = HfArgumentParser(PruningArguments).parse_args_into_dataclasses(
        args=["--output_dir", str(tmp_path), "--round_to", "8", "--use_cpu", "--report_to", "none"])
    assert parsed.round_to == "8"
    assert make_args(tmp_path, round_to=4).round_to == "4" and make_args(tmp_path, round_to="AUTO").round_to == "auto"
    assert make_args(tmp_path).round_to == "auto"


# ---------------------------------------------------------------- uniform widths (uniform_widths=True)
def test_tied_groups_of_repeated_blocks_keep_equal_widths_and_meet_the_target():
    torch.manual_seed(0)
    model, x = timm.create_model("cifar_resnet56", num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    graph = StructureGraph(model, x)
    ties = repeated_block_ties(graph.groups)
    assert ["layer1.0.conv1", "layer1.1.conv1"] == ties[0][:2] and all(len(tie) == 9 for tie in ties)
    macs = MacsModel(graph, x)
    selection = select_lowest(graph.groups, group_saliencies(model, graph.groups), macs, 0.5, 0.9,
                              multiples=width_multiples(graph.groups, "8", "cpu", graph.model), ties=ties)
    units = {g.name: g.num_units for g in graph.groups}
    for tie in ties:
        assert len({len(selection.keep.get(name, range(units[name]))) for name in tie}) == 1, tie
    graph.apply(selection.keep)
    assert 0.5 <= 1 - count_macs_params(model, x)[0] / macs.base_macs < 0.53


_PLAIN_LOAD = """
import json, sys, torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
torch.manual_seed(0)
with torch.no_grad():
    logits = model(torch.randn(2, 3, 32, 32)).logits
print(json.dumps({"hf_prune_imported": "hf_prune" in sys.modules, "logits": logits.tolist()}))
"""


def test_a_uniformly_pruned_vit_loads_with_plain_transformers(make_trainer, tmp_path):
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=3,
                                                num_attention_heads=4, intermediate_size=128, num_labels=4))
    trainer = make_trainer(tmp_path, model=model, pruning_method="magnitude", optim="adamw_torch", learning_rate=1e-3,
                           max_steps=4, uniform_widths=True, round_to="16")
    trainer.train()
    trainer.save_model()
    (event,) = trainer.pruning_events
    assert event["macs_reduction"] >= 0.5 and len({kept for _, kept in event["widths"].values()}) == 2  # heads, MLP
    config = json.loads((tmp_path / "config.json").read_text())
    layer = trainer.model.vit.layers[0]
    assert config["model_type"] == "vit" and config["intermediate_size"] == layer.mlp.fc1.out_features < 128
    loaded = subprocess.run([sys.executable, "-c", _PLAIN_LOAD, str(tmp_path)], capture_output=True, text=True,
                            timeout=300, check=True)
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)
    with torch.no_grad():
        expected = trainer.model.eval()(torch.randn(2, 3, 32, 32).to(trainer.model.device)).logits
    assert not result["hf_prune_imported"]
    torch.testing.assert_close(torch.tensor(result["logits"]), expected.cpu(), rtol=1e-4, atol=1e-5)


def test_laasp_refuses_uniform_widths_with_the_choices(make_args, tmp_path):
    with pytest.raises(ValueError, match="pruning_method='laasp' cannot keep widths uniform.*'ocsp'"):
        make_args(tmp_path, pruning_method="laasp", uniform_widths=True)


def test_resumed_runs_keep_the_dense_models_multiples(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="laasp", round_to="8")
    trainer.width_multiples = {"layer1.0.conv1": 8, "layer3.0.conv1": 4}  # as fixed before the first prune
    trainer._record().save(str(tmp_path), trainer.args)
    resumed = make_trainer(tmp_path, pruning_method="laasp", round_to="8")
    resumed._read_pruning_state(str(tmp_path))
    assert resumed.width_multiples == trainer.width_multiples
    resumed.pruning_method = create_method("none")  # its hooks need a training state; the multiples do not
    resumed._on_train_begin()  # not recomputed from the (possibly pruned) model
    assert resumed.width_multiples == trainer.width_multiples
    changed = make_trainer(tmp_path, pruning_method="laasp", round_to="auto")
    with pytest.raises(ValueError, match="round_to: '8' in the checkpoint, 'auto' now"):
        changed._read_pruning_state(str(tmp_path))


def test_laasp_steps_leave_multiples_and_stop_at_the_rounded_floor():
    method = LAASPPruning()
    method.dense_units, method.step_sizes = {"g": 100}, {"g": 16}
    group = types.SimpleNamespace(name="g", num_units=100)
    context = types.SimpleNamespace(graph=types.SimpleNamespace(groups=[group]), width_multiples={"g": 8},
                                    args=types.SimpleNamespace(layer_prune_limit=0.75))
    widths = [100]
    while count := method.step_units(context, "g"):
        group.num_units -= count
        widths.append(group.num_units)
    assert widths == [100, 80, 64, 48, 32]  # the first step drops the 4 that are no multiple; floor 25 -> 32
