"""OCSPruner: stability arithmetic, sub-network selection, the shrink, and full runs."""

from __future__ import annotations

import copy
import json
import types

import pytest
import timm
import torch

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import PruningArguments, StructureGraph, count_macs_params
from hf_prune.methods.ocsp import (
    OCSPruning,
    _shrink_slices,
    flops_weighted_scores,
    jaccard,
    pruning_set_norm_ratio,
    stability_score,
)
from hf_prune.structure import MacsModel, group_saliencies, select_lowest


def test_jaccard_and_stability_on_hand_made_sets():
    assert jaccard([0, 1, 2, 3], [2, 3, 4, 5]) == pytest.approx(2 / 6)
    assert jaccard([1, 2], [1, 2]) == 1.0 and jaccard([], []) == 1.0 and jaccard([0], [1]) == 0.0
    now = {"a": [0, 1, 2], "b": [0, 1], "c": [5]}
    before = {"a": [0, 1, 3], "b": [0, 1], "c": [5]}
    assert stability_score(now, before) == pytest.approx((2 / 4 + 1 + 1) / 3)


def _context(model, x, target, **arg_overrides):
    graph = StructureGraph(model, x)
    macs = MacsModel(graph, x)
    args = PruningArguments(output_dir="unused", report_to=[], target_flops_reduction=target, **arg_overrides)
    return types.SimpleNamespace(model=model, graph=graph, macs=macs, cost=macs, args=args, learning_rate=0.1,
                                 log=lambda record: None, width_multiples={}, width_ties=[], is_pruned=False,
                                 ranking_scores=lambda scores: scores)  # latency_aware_ranking is off


def _vit():
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10, depth=4)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("make_model", [lambda: timm.create_model("cifar_resnet56", num_classes=10), _vit],
                         ids=["cifar_resnet56", "vit_tiny"])
def test_selected_sub_network_meets_the_target_after_a_real_prune(target, make_model):
    torch.manual_seed(0)
    model, x = make_model().eval(), torch.randn(1, 3, 32, 32)
    context = _context(model, x, target)
    selection = OCSPruning()._select(context)

    dense_macs, _ = count_macs_params(model, x)
    pruned = copy.deepcopy(model)
    StructureGraph(pruned, x).apply(selection.keep)
    macs, _ = count_macs_params(pruned, x)
    assert target <= 1 - macs / dense_macs < target + 0.005
    assert selection.reduction == pytest.approx(1 - macs / dense_macs, abs=1e-6)


def test_selection_ranks_by_the_references_sqrt_fan_saliency():
    """GroupNormV2Importance: sum(w^2) / sqrt(fan) per coupled tensor; / fan would rank differently."""
    torch.manual_seed(0)
    model, x = timm.create_model("cifar_resnet20", num_classes=10), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
    context = _context(model, x, 0.5)

    def keep_with(fan_power):
        scores = flops_weighted_scores(group_saliencies(model, context.graph.groups, fan_power), context.graph.groups,
                                       context.macs)
        return select_lowest(context.graph.groups, scores, context.macs, 0.5, context.args.layer_prune_limit).keep

    assert OCSPruning()._select(context).keep == keep_with(0.5) != keep_with(1.0)


def test_pruning_set_norm_ratio_on_hand_made_scores():
    saliencies = {"a": torch.tensor([0.04, 1.0, 4.0]), "b": torch.tensor([0.01, 1.0])}
    # pruned norms 0.2 and 0.1, kept norms 1, 2, 1
    assert pruning_set_norm_ratio(saliencies, {"a": [0], "b": [0]}) == pytest.approx(0.15 / (4 / 3))
    assert pruning_set_norm_ratio(saliencies, {}) == 1.0


@pytest.mark.parametrize("epochs, steps_per_epoch", [(12, 32), (12, 16), (300, 391)])
def test_any_run_length_follows_the_references_fractions_of_the_run(epochs, steps_per_epoch):
    torch.manual_seed(0)
    model, x = timm.create_model("cifar_resnet20", num_classes=10), torch.randn(1, 3, 32, 32)
    context = _context(model, x, 0.5)
    max_steps = epochs * steps_per_epoch
    context.state = types.SimpleNamespace(max_steps=max_steps, num_train_epochs=epochs)
    context.steps_per_epoch, context.step_in_run = steps_per_epoch, lambda epoch, _: round(epoch * steps_per_epoch)
    method = OCSPruning()
    method.on_train_begin(context)
    checks = [step for step in range(1, max_steps + 1) if method._check_due(step)]
    assert len(checks) == min(300, max_steps)  # one per 1/300 of the run, at most one per step
    # Lag and window span 2/300 and 3/300 of the run (at least one check); reg grows by delta every 3/300;
    # regularization starts at 32/300 (epoch 32 of the reference's 300); the shrink per fraction of the run
    # is the reference's: reg * lr per step of its 117,300.
    assert method._lag == max(1, round(2 * len(checks) / 300)) and method._window == max(1, round(3 * len(checks) / 300))
    assert method._reg_interval_steps == pytest.approx(3 * max_steps / 300)
    assert method._reg_start_step == round(32 / 300 * max_steps)
    assert method._reg_scale * max_steps == pytest.approx(300 * 391)
    if (epochs, steps_per_epoch) == (300, 391):
        # The reference recipe itself: one check per epoch, identical shrink, so the same decision epochs.
        assert checks == [391 * e for e in range(1, 301)] and method._reg_scale == 1.0
        assert (method._lag, method._window, method._reg_interval_steps) == (2, 3, 3 * 391)
        assert method._reg_start_step == 32 * 391 and method._deadline_step == 120 * 391


def test_regularization_starts_exactly_at_reg_start_unless_a_plateau_tolerance_is_set():
    method = OCSPruning()
    method._reg_start_step = 100
    method.search.checks = 10
    method.search.stability_avg = [(0.0, 0.9)] * 5  # flat: a plateau
    assert not method._regularization_due(50, None) and method._regularization_due(100, None)
    assert method._regularization_due(50, 1e-4)


def test_shrink_scales_exactly_the_pruning_set_slices():
    torch.manual_seed(0)
    model, x = timm.create_model("cifar_resnet20", num_classes=10), torch.randn(1, 3, 32, 32)
    context = _context(model, x, 0.5)
    method = OCSPruning()
    method._reg_scale, method.search.reg = 1.0, 0.5  # factor = 1 - 0.5 * 0.1 = 0.95
    groups = context.graph.groups
    stem = next(g for g in groups if any(p.param_name == "conv1.weight" for p in g.slices))
    other = next(g for g in groups if g is not stem)
    method.search.pruning_set = {stem.name: [1, 3], other.name: [0]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method._shrink(context)

    expected = {n: p.clone() for n, p in before.items()}
    for name, dim, index in _shrink_slices(groups, method.search.pruning_set):
        expected[name].index_copy_(dim, index, expected[name].index_select(dim, index) * 0.95)
    touched = set()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), expected[name]), name
        if not torch.equal(param.detach(), before[name]):
            touched.add(name)
    # Conv rows and columns and BN gammas of both groups are scaled, never biases.
    assert touched and not any(n.endswith("bias") for n in touched)
    assert {p.param_name for g in (stem, other) for p in g.slices if not p.param_name.endswith("bias")} == touched
    rows = next(p.index for p in stem.slices if p.param_name == "conv1.weight")
    weight, old = dict(model.named_parameters())["conv1.weight"].detach(), before["conv1.weight"]
    for unit in range(stem.num_units):
        factor = 0.95 if unit in (1, 3) else 1.0
        assert torch.allclose(weight[rows[unit]], old[rows[unit]] * factor)


def _ocsp_trainer(make_trainer, tmp_path, **overrides):
    # A check every 2 of the 32 steps: the default (1/300 of the run) would check every step.
    settings = dict(pruning_method="ocsp", num_train_epochs=4, seed=0, ocsp_monitor_interval=0.25)
    settings.update(overrides)
    return make_trainer(tmp_path, **settings)


def test_ocsp_run_searches_regularizes_and_prunes_once(make_trainer, tmp_path):
    trainer = _ocsp_trainer(make_trainer, tmp_path, save_strategy="no")
    x = torch.randn(1, 3, 32, 32)
    dense_macs, _ = count_macs_params(trainer.model, x)
    trainer.train()

    search = trainer.pruning_method.search
    (event,) = trainer.pruning_events
    macs, _ = count_macs_params(trainer.model, x)
    assert 0.5 <= 1 - macs / dense_macs < 0.51 and event["macs_reduction"] == pytest.approx(1 - macs / dense_macs)
    assert search.phase == "pruned" and search.reg >= trainer.args.ocsp_reg_init
    assert search.reg_start_epoch < search.pruned_epoch <= 0.4 * 4 + 1 / 8  # the deadline, rounded to a step
    logged = [h for h in trainer.state.log_history if "pruning/stability" in h]
    assert len(logged) == len(search.stability) > 3 and all(0 <= h["pruning/stability"] <= 1 for h in logged)
    ratios = [h["pruning/pruning_set_norm_ratio"] for h in trainer.state.log_history if "pruning/pruning_set_norm_ratio" in h]
    assert len(ratios) == len(search.norm_ratio) == search.checks and ratios[-1] < ratios[0]  # the shrink works
    assert trainer.evaluate()["eval_loss"] < 1.0  # ln(4) = 1.39 is chance
    assert (tmp_path / "ocsp_stability.png").stat().st_size > 0 and (tmp_path / "pruned_widths.png").exists()


def test_a_stable_prune_waits_for_the_pruning_set_to_shrink(make_trainer, tmp_path):
    # Without the norm-ratio rule the toy run is stable soon after regularization starts; with a ratio
    # the 10 regularized steps cannot reach, it prunes at the deadline.
    eager = _ocsp_trainer(make_trainer, tmp_path / "eager", ocsp_max_norm_ratio=float("inf"))
    strict = _ocsp_trainer(make_trainer, tmp_path / "strict", ocsp_max_norm_ratio=0.01)
    eager.train()
    strict.train()
    assert "stable sub-network" in eager.pruning_events[0]["reason"]
    assert "prune deadline reached" in strict.pruning_events[0]["reason"]
    assert strict.pruning_method.search.norm_ratio[-1][1] > 0.01


def test_same_seed_gives_the_same_structure_and_two_trainers_do_not_interfere(make_trainer, tmp_path):
    first, second = _ocsp_trainer(make_trainer, tmp_path / "a"), _ocsp_trainer(make_trainer, tmp_path / "b")
    first.train()
    second.train()
    assert first.pruning_events[0]["widths"] == second.pruning_events[0]["widths"]
    assert first.pruning_method.search.stability == second.pruning_method.search.stability
    assert first.pruning_method is not second.pruning_method


def test_resume_mid_search_continues_identically(make_trainer, tmp_path):
    uninterrupted = _ocsp_trainer(make_trainer, tmp_path / "full", save_strategy="steps", save_steps=6)
    uninterrupted.train()
    checkpoint = tmp_path / "full" / "checkpoint-6"
    saved = json.loads((checkpoint / "pruning_state.json").read_text())
    assert saved["method_state"]["phase"] == "regularizing"  # the checkpoint is mid-search

    resumed = _ocsp_trainer(make_trainer, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.pruning_method.search.checks == uninterrupted.pruning_method.search.checks
    assert resumed.pruning_method.state_dict() | {"search_seconds": 0} == (
        uninterrupted.pruning_method.state_dict() | {"search_seconds": 0}
    )
    for (name, a), b in zip(uninterrupted.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_transformers_vit_run_prunes_heads_end_to_end(make_trainer, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=128, num_labels=4))
    trainer = _ocsp_trainer(make_trainer, tmp_path, model=model, optim="adamw_torch", learning_rate=1e-3)
    trainer.train()
    (event,) = trainer.pruning_events
    assert event["macs_reduction"] >= 0.5
    heads = [layer.attention.num_attention_heads for layer in trainer.model.vit.layers]
    assert any(h < 4 for h in heads) or any("intermediate" in name for name in event["widths"])
    logits = trainer.model(torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ocsp_stability_threshold": 1.5}, r"ocsp_stability_threshold must lie in \(0, 1\]"),
        ({"ocsp_stability_lag": 0}, "ocsp_stability_lag must be a positive number"),
        ({"ocsp_reg_delta": -1e-4}, "ocsp_reg_delta must be >= 0"),
        ({"ocsp_monitor_interval": 0.0}, "ocsp_monitor_interval must be > 0"),
        ({"ocsp_max_norm_ratio": 0.0}, "ocsp_max_norm_ratio must be > 0"),
        ({"ocsp_plateau_tolerance": -1.0}, "leave it unset to start regularization exactly at ocsp_reg_start"),
    ],
)
def test_bad_ocsp_arguments_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        PruningArguments(output_dir=str(tmp_path), report_to=[], **overrides)


def test_deadline_outside_the_run_fails_before_training(make_trainer, tmp_path):
    trainer = _ocsp_trainer(make_trainer, tmp_path, ocsp_prune_deadline=10.0)
    with pytest.raises(ValueError, match="ocsp_prune_deadline=10 epochs falls at step 80.*train longer"):
        trainer.train()
    assert trainer.state.global_step == 0
