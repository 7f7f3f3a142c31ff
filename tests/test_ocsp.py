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
from hf_prune.methods.ocsp import OCSPruning, _shrink_slices, jaccard, stability_score
from hf_prune.structure import MacsModel


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
    return types.SimpleNamespace(model=model, graph=graph, macs=macs, args=args, learning_rate=0.1,
                                 log=lambda record: None)


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
    settings = dict(pruning_method="ocsp", num_train_epochs=4, seed=0)
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
    assert search.reg_start_epoch < search.pruned_epoch <= 0.4 * 4
    logged = [h for h in trainer.state.log_history if "pruning/stability" in h]
    assert len(logged) == len(search.stability) > 3 and all(0 <= h["pruning/stability"] <= 1 for h in logged)
    assert trainer.evaluate()["eval_loss"] < 1.0  # ln(4) = 1.39 is chance
    assert (tmp_path / "ocsp_stability.png").stat().st_size > 0 and (tmp_path / "pruned_widths.png").exists()


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
