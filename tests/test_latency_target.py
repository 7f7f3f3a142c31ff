"""The latency cost model and the latency target, with deterministic fake timers (nothing is timed)."""

from __future__ import annotations

import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn

import hf_prune.latency
import hf_prune.structure.latency_model as latency_model
import hf_prune.trainer.latency_target as latency_target
import hf_prune.trainer.pruning_trainer as pruning_trainer
from hf_prune.structure import (
    LatencyModel, LatencyProfile, StructureGraph, measure_profile, scores_per_cost, select_lowest,
)
from hf_prune.hub.model_card import measured_against
from hf_prune.trainer.latency_target import PROFILE_NAME

REST_MS = 2.0  # what the fake dense model costs beyond its layers
AFTER_PRUNE_LOAD = 3.0  # the machine is 3x slower when the slim model is timed than when the profile was


def _fake_layer_ms(signature: str, out_width: int, in_width: int, batch_size: int, device) -> float:
    """Milliseconds proportional to the layer's MACs per position: bilinear in the widths."""
    return out_width * in_width / 100


@pytest.fixture
def fake_timers(monkeypatch) -> Counter:
    """Replace every timing by a deterministic function; count the calls by kind."""
    calls = Counter()

    def layer_ms(*args):
        calls["layer"] += 1
        return _fake_layer_ms(*args)

    def dense_ms(model, input_size, batch_size, **kwargs):
        calls["dense"] += 1
        return _fake_whole_ms(model, input_size)

    def after_prune_ms(model, input_size, batch_size, **kwargs):
        calls["after_prune"] += 1
        return AFTER_PRUNE_LOAD * _fake_whole_ms(model, input_size)

    monkeypatch.setattr(latency_model, "time_layer_ms", layer_ms)
    monkeypatch.setattr(latency_model, "measure_latency_ms", dense_ms)
    monkeypatch.setattr(latency_target, "measure_latency_ms", after_prune_ms)  # a model without a dense source
    monkeypatch.setattr(hf_prune.latency, "measure_latency_ms", after_prune_ms)  # slim and dense in turns
    return calls


def _fake_whole_ms(model: nn.Module, input_size: tuple[int, ...]) -> float:
    """The fake layers' milliseconds plus ``REST_MS`` (only ``REST_MS`` for the model with its layers stubbed out)."""
    if any("forward" in module.__dict__ for module in model.modules()):
        return REST_MS
    shapes = latency_model.layer_shapes(model, torch.zeros(1, *input_size, device=next(model.parameters()).device))
    return sum(s.calls * _fake_layer_ms("", s.out_width, s.in_width, 0, None) for s in shapes.values()) + REST_MS


class _TwoConvs(nn.Module):
    """conv(3->8) -> conv(8->16) -> linear(16->4): two channel groups, of 8 and 16 units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


def _expected_ms(removed1: int, removed2: int, rest_ms: float = REST_MS, positions: int = 64) -> float:
    """The documented model by hand: layers' fake ms at the widths left, plus the rest scaled by the
    layers' output activations kept."""
    c1, c2 = 8 - removed1, 16 - removed2
    layers = (c1 * 3 + c2 * c1 + 4 * c2) / 100
    activations = (c1 * positions + c2 * positions + 4) / (8 * positions + 16 * positions + 4)
    return layers + rest_ms * activations


def test_tables_that_overestimate_the_model_are_scaled_to_the_measured_dense_latency(fake_timers, monkeypatch):
    model, x = _TwoConvs().eval(), torch.randn(1, 3, 8, 8)
    graph = StructureGraph(model, x)
    monkeypatch.setattr(latency_model, "time_layer_ms", lambda *args: 2 * _fake_layer_ms(*args))  # layers alone: 2x
    profile = measure_profile(graph, x, batch_size=4, device="cpu", disable_tqdm=True)
    latency = LatencyModel(graph, profile, x)
    assert profile.layer_scale == pytest.approx(0.5)
    assert latency.base_cost == pytest.approx(profile.dense_ms) == pytest.approx(profile.predicted_dense_ms)
    group1, group2 = sorted(graph.groups, key=lambda g: g.num_units)
    for removed1, removed2 in ((1, 0), (5, 11)):  # the unscaled model's predictions, which the 2x tables reproduce
        assert latency.cost({group1.name: removed1, group2.name: removed2}) == pytest.approx(_expected_ms(removed1, removed2))


def test_a_burst_of_load_during_one_dense_timing_does_not_move_the_profile(monkeypatch):
    model, x = _TwoConvs().eval(), torch.randn(1, 3, 8, 8)
    order = []

    def whole_ms(module, input_size, batch_size, **kwargs):
        stub = any("forward" in m.__dict__ for m in module.modules())
        order.append("rest" if stub else "dense")
        burst = 10.0 if len(order) in (3, 4) else 1.0  # the second (midway) pair of timings runs under load
        return burst * (REST_MS if stub else 5.0)

    monkeypatch.setattr(latency_model, "time_layer_ms", _fake_layer_ms)
    monkeypatch.setattr(latency_model, "measure_latency_ms", whole_ms)
    profile = measure_profile(StructureGraph(model, x), x, batch_size=4, device="cpu", disable_tqdm=True)
    assert order == ["dense", "rest"] * 3
    assert profile.dense_ms == 5.0 and profile.rest_ms == REST_MS


def test_latency_model_predicts_the_tables_and_drives_the_selection(fake_timers):
    model, x = _TwoConvs().eval(), torch.randn(1, 3, 8, 8)
    graph = StructureGraph(model, x)
    profile = measure_profile(graph, x, batch_size=4, device="cpu", disable_tqdm=True)
    latency = LatencyModel(graph, profile, x)
    group1, group2 = sorted(graph.groups, key=lambda g: g.num_units)
    assert (group1.num_units, group2.num_units) == (8, 16)
    assert profile.rest_ms == REST_MS
    assert latency.base_cost == pytest.approx(_expected_ms(0, 0)) == pytest.approx(profile.predicted_dense_ms)
    for removed1, removed2 in ((1, 0), (0, 3), (5, 11), (7, 15)):
        assert latency.cost({group1.name: removed1, group2.name: removed2}) == pytest.approx(_expected_ms(removed1, removed2))

    # group1's units score lowest: they go first, then group2's, until the predicted latency is halved.
    scores = {group1.name: torch.arange(8.0), group2.name: 100 + torch.arange(16.0)}
    selection = select_lowest(graph.groups, scores, latency, 0.5, max_prune_ratio=0.9)
    order = [(r1, 0) for r1 in range(8)] + [(7, r2) for r2 in range(1, 15)]
    expected = next((r1, r2) for r1, r2 in order if 1 - _expected_ms(r1, r2) / _expected_ms(0, 0) >= 0.5)
    removed = (8 - len(selection.keep[group1.name]), 16 - len(selection.keep.get(group2.name, range(16))))
    assert removed == expected
    assert selection.reduction == pytest.approx(1 - _expected_ms(*expected) / _expected_ms(0, 0))


def test_the_rest_is_timed_on_the_model_with_its_layers_stubbed_out():
    model, x = _TwoConvs().eval(), torch.randn(1, 3, 8, 8)
    stub = latency_model.without_timed_layers(model, x, batch_size=4)
    with torch.inference_mode():
        expected = model(x.expand(4, -1, -1, -1))
        torch.testing.assert_close(stub(torch.zeros(4, 3, 8, 8)), expected)  # the layers ignore their inputs
    assert stub.conv1.weight is not model.conv1.weight  # a copy: the model itself is untouched


def test_profile_round_trips_and_refuses_another_model(fake_timers, tmp_path):
    model, x = _TwoConvs().eval(), torch.randn(1, 3, 8, 8)
    profile = measure_profile(StructureGraph(model, x), x, batch_size=4, device="cpu", disable_tqdm=True)
    path = str(tmp_path / PROFILE_NAME)
    profile.save(path)
    assert LatencyProfile.load(path) == profile

    other = timm.create_model("cifar_resnet20", num_classes=4)
    with pytest.raises(ValueError, match=r"does not fit this model \(layer 'conv2' is not in this model"):
        LatencyModel(StructureGraph(other, torch.randn(1, 3, 32, 32)), profile, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="does not fit this model"):  # another input size: other layer shapes
        LatencyModel(StructureGraph(model, torch.randn(1, 3, 16, 16)), profile, torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="batch 4, but latency_batch_size is 8"):
        profile.check_settings("cpu", 8)

    saved = json.loads((tmp_path / PROFILE_NAME).read_text())
    saved["tables"] = {key: {**table, "ms": [[-1.0]]} for key, table in saved["tables"].items()}
    (tmp_path / PROFILE_NAME).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="not a latency profile hf_prune can read"):
        LatencyProfile.load(path)


def _latency_trainer(make_trainer, output_dir, **overrides):
    settings = dict(pruning_method="magnitude", max_steps=4, target_flops_reduction=None, target_latency_reduction=0.5,
                    card_latency=False)
    return make_trainer(output_dir, **{**settings, **overrides})


def test_latency_target_prunes_to_the_prediction_and_reuses_the_profile(make_trainer, fake_timers, tmp_path):
    first = _latency_trainer(make_trainer, tmp_path / "first")
    first.train()
    measured_once = fake_timers["layer"]
    # the profile: dense and rest, 3 times; after the prune: slim and the rebuilt dense architecture in 3 turns
    assert measured_once > 0 and fake_timers["dense"] == 6 and fake_timers["after_prune"] == 6
    (event,) = first.pruning_events
    dense_ms = first.latency_profile.predicted_dense_ms
    assert dense_ms == pytest.approx(first.latency_profile.dense_ms)  # the fake layers and rest add up
    assert 0.5 <= 1 - event["latency_ms_predicted"] / dense_ms < 0.52
    slim_ms = _fake_whole_ms(first.model, (3, 32, 32))
    assert event["latency_ms_measured"] == pytest.approx(AFTER_PRUNE_LOAD * slim_ms)
    assert event["latency_ms_dense_measured"] == pytest.approx(AFTER_PRUNE_LOAD * dense_ms)
    logged = next(h for h in first.state.log_history if "pruning/latency_ms_predicted" in h)
    assert logged["pruning/latency_ms_predicted"] == pytest.approx(event["latency_ms_predicted"])
    assert logged["pruning/latency_ms_measured"] == pytest.approx(event["latency_ms_measured"])
    assert logged["pruning/latency_ms_dense_measured"] == pytest.approx(event["latency_ms_dense_measured"])
    summary = first.latency_summary()
    # the load hits both timings alike: the measured reduction is the fake's, not 3x slim against the profile's dense
    assert summary["measured_reduction"] == pytest.approx(1 - slim_ms / dense_ms)
    assert summary["predicted_reduction"] == pytest.approx(1 - event["latency_ms_predicted"] / dense_ms)
    first.save_model()
    card = (tmp_path / "first" / "README.md").read_text()
    assert f"slim {event['latency_ms_predicted']:.2f} ms predicted by the latency profile" in card
    assert (f"{event['latency_ms_measured']:.2f} ms measured against {event['latency_ms_dense_measured']:.2f} ms dense "
            f"timed in turns with it ({1 - slim_ms / dense_ms:.1%} less)") in card
    assert "target 50% less" in card
    # a prune before the method's last (a LAASP step) times the slim model alone: no dense rebuild per step
    timings = fake_timers["after_prune"]
    assert first._latency_after_prune(last=False)["latency_ms_dense_measured"] is None
    assert fake_timers["after_prune"] == timings + 1

    profile_path = tmp_path / "first" / PROFILE_NAME
    again = _latency_trainer(make_trainer, tmp_path / "second", latency_profile=str(profile_path))
    again.train()
    rerun = _latency_trainer(make_trainer, tmp_path / "first")  # finds its output_dir's profile
    rerun.train()
    assert fake_timers["layer"] == measured_once and fake_timers["dense"] == 6  # nothing measured again
    assert again.pruning_events[0]["widths"] == rerun.pruning_events[0]["widths"] == event["widths"]


def test_a_profile_of_another_model_or_batch_size_is_refused_before_training(make_trainer, fake_timers, tmp_path):
    _latency_trainer(make_trainer, tmp_path / "first").train()
    profile_path = str(tmp_path / "first" / PROFILE_NAME)
    other = _latency_trainer(make_trainer, tmp_path / "other", latency_profile=profile_path,
                             model=timm.create_model("cifar_resnet32", num_classes=4))
    with pytest.raises(ValueError, match="does not fit this model"):
        other.train()
    batch = _latency_trainer(make_trainer, tmp_path / "batch", latency_profile=profile_path, latency_batch_size=8)
    with pytest.raises(ValueError, match="latency_batch_size is 8"):
        batch.train()
    assert other.state.global_step == batch.state.global_step == 0


@pytest.mark.skipif(torch.accelerator.is_available(), reason="the machine has an accelerator to measure on")
def test_an_accelerator_latency_device_on_a_cpu_machine_is_refused_before_training(make_trainer, fake_timers, tmp_path):
    trainer = _latency_trainer(make_trainer, tmp_path, latency_device="cuda")
    with pytest.raises(ValueError, match="has no accelerator: pass --latency_device cpu"):
        trainer.train()
    assert trainer.state.global_step == 0 and fake_timers["layer"] == 0


def test_every_rank_gets_rank_zeros_profile_or_error(make_trainer, fake_timers, tmp_path, monkeypatch):
    rank0 = _latency_trainer(make_trainer, tmp_path / "rank0")
    profile = rank0._shared_latency_profile()
    sent = []

    def broadcast(objects, from_process):
        sent.append(from_process)
        return [profile]  # what rank 0 sent

    rank1 = _latency_trainer(make_trainer, tmp_path / "rank1")
    accelerator = type(rank1.accelerator)
    monkeypatch.setattr(accelerator, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(accelerator, "num_processes", property(lambda self: 2))
    monkeypatch.setattr(pruning_trainer, "broadcast_object_list", broadcast)
    measured = fake_timers["layer"]
    assert rank1._shared_latency_profile() is profile and sent == [0]
    assert fake_timers["layer"] == measured  # rank 1 measured nothing

    error = ValueError("the latency profile does not fit this model")
    monkeypatch.setattr(pruning_trainer, "broadcast_object_list", lambda objects, from_process: [error])
    with pytest.raises(ValueError, match="does not fit this model"):
        rank1._shared_latency_profile()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target_latency_reduction": 0.5}, "target_flops_reduction .* and target_latency_reduction .* are exclusive"),
        ({"target_flops_reduction": None, "target_latency_reduction": 1.0}, r"target_latency_reduction must lie in \(0, 1\)"),
        ({"latency_batch_size": 0}, "latency_batch_size must be at least 1"),
        ({"latency_device": "gpu0"}, "latency_device 'gpu0' is not a device"),
        ({"latency_profile": "missing.json"}, "latency_profile missing.json is not a file"),
    ],
)
def test_bad_latency_arguments_are_refused_with_the_fix(make_args, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **overrides)


def test_the_flops_target_defaults_to_half_unless_latency_is_targeted(make_args, tmp_path):
    assert make_args(tmp_path, target_flops_reduction=None).target_reduction == 0.5
    latency = make_args(tmp_path, target_flops_reduction=None, target_latency_reduction=0.3)
    assert (latency.target_flops_reduction, latency.target_reduction, latency.tracks_latency) == (None, 0.3, True)


def test_a_model_without_a_dense_source_is_measured_alone_against_the_profile(fake_timers):
    model, x = _TwoConvs().eval(), torch.randn(1, 3, 8, 8)
    profile = measure_profile(StructureGraph(model, x), x, batch_size=4, device="cpu", disable_tqdm=True)
    slim_ms, dense_ms = latency_target.measure_after_prune_ms(model, None, (3, 8, 8), profile, torch.device("cpu"))
    assert dense_ms is None and fake_timers["after_prune"] == 1
    assert slim_ms == pytest.approx(AFTER_PRUNE_LOAD * profile.dense_ms)
    event = {"latency_ms_predicted": 1.0, "latency_ms_measured": slim_ms, "latency_ms_dense_measured": dense_ms}
    summary = latency_target.latency_summary(profile, [event], 0.5)
    assert summary["measured_dense_ms"] == profile.dense_ms and not summary["dense_timed_in_turns"]
    assert measured_against(summary) == f"the profile's {profile.dense_ms:.2f} ms dense"
    assert summary["measured_reduction"] == pytest.approx(1 - AFTER_PRUNE_LOAD)


class _LinearCost:
    """A cost of 100 that removing a unit of 'a' lowers by 2, of 'b' by 0.5, of 'c' not at all."""

    base_cost = 100.0

    def cost(self, removed: dict[str, int]) -> float:
        return self.base_cost - 2 * removed.get("a", 0) - 0.5 * removed.get("b", 0)


def test_scores_per_cost_divide_by_what_one_unit_saves():
    groups = [SimpleNamespace(name=name, num_units=4) for name in "abc"]
    scores = {name: torch.tensor([1.0, 2.0]) for name in "abc"}
    ranked = scores_per_cost(scores, groups, _LinearCost(), multiples={"a": 2})
    assert torch.equal(ranked["a"], torch.tensor([0.5, 1.0]))  # a multiple of 2 saves 4: 2 per unit
    assert torch.equal(ranked["b"], torch.tensor([2.0, 4.0]))
    assert torch.equal(ranked["c"], torch.tensor([1.0, 2.0]) / 1e-4)  # saves nothing: a millionth of 100


def _slow_first_stage_ms(signature: str, out_width: int, in_width: int, batch_size: int, device) -> float:
    """Milliseconds proportional to the layer's MACs, ten times as many per MAC on 32x32 inputs (narrow,
    memory-bound layers)."""
    spatial = json.loads(signature)["spatial"]  # [] for a linear layer
    positions = math.prod(spatial)
    return (10.0 if spatial[-1:] == [32] else 1.0) * out_width * in_width * positions / 1e5


def test_latency_aware_ranking_meets_the_macs_target_with_a_faster_model(make_trainer, fake_timers, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(latency_model, "time_layer_ms", _slow_first_stage_ms)
    settings = dict(pruning_method="magnitude", max_steps=4, card_latency=False)
    aware = make_trainer(tmp_path / "aware", latency_aware_ranking=True, **settings)
    aware.train()
    profile = str(tmp_path / "aware" / PROFILE_NAME)  # a MACs target, but the ranking needed a profile
    plain = make_trainer(tmp_path / "plain", latency_profile=profile, **settings)  # same tables, saliency alone
    plain.train()
    (fast,), (slow,) = aware.pruning_events, plain.pruning_events
    assert 0.5 <= fast["macs_reduction"] < 0.52 and 0.5 <= slow["macs_reduction"] < 0.52
    assert fast["latency_ms_predicted"] < 0.8 * slow["latency_ms_predicted"]
    first_stage = [name for name in fast["widths"] if name.startswith(("conv1", "layer1"))]
    assert first_stage and all(fast["widths"][name][1] <= 8 for name in first_stage)  # of 16
    aware.save_model()
    assert "latency_aware_ranking" in (tmp_path / "aware" / "README.md").read_text()


def test_laasp_refuses_latency_aware_ranking(make_args, tmp_path):
    with pytest.raises(ValueError, match="pruning_method='laasp' cannot rank units by latency"):
        make_args(tmp_path, pruning_method="laasp", latency_aware_ranking=True)
