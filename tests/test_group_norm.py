"""The Torch-Pruning peer (tp_groupnorm): its regularizer, its scores and its place in a run."""

from __future__ import annotations

import pytest
import timm
import torch

from hf_prune.structure import StructureGraph
from hf_prune.structure.group_sparsity import GroupNormSparsity

REG = 1e-3


@pytest.fixture()
def resnet():
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=4)
    example = torch.randn(1, 3, 32, 32)
    graph = StructureGraph(model, example)
    return model, graph, GroupNormSparsity(graph, example, reg=REG)


def _coupled_norms(model, group_name: str) -> torch.Tensor:
    """Per unit: the mean over conv1 rows, bn1 scales and conv2 columns of the squared norms."""
    block = model.get_submodule(group_name.rsplit(".", 1)[0])
    return (block.conv1.weight.pow(2).sum((1, 2, 3)) + block.bn1.weight.pow(2)
            + block.conv2.weight.pow(2).sum((0, 2, 3))) / 3


def test_scores_are_the_coupled_group_norm_normalized_by_its_mean(resnet):
    model, graph, sparsity = resnet
    with torch.no_grad():
        model.layer2[1].conv1.weight.mul_(torch.linspace(0.2, 2.0, 32).view(-1, 1, 1, 1))
    scores = sparsity.unit_scores()
    assert set(scores) == {g.name for g in graph.groups}
    expected = _coupled_norms(model, "layer2.1.conv1")
    torch.testing.assert_close(scores["layer2.1.conv1"], expected / expected.mean(), rtol=1e-5, atol=1e-6)
    assert scores["layer2.1.conv1"].argmin() == 0 and scores["layer2.1.conv1"].argmax() == 31


def test_regularizer_adds_a_per_unit_weight_decay_strongest_on_the_weakest_unit(resnet):
    model, _, sparsity = resnet
    conv = model.layer2[1].conv1
    with torch.no_grad():
        conv.weight.mul_(torch.linspace(0.2, 2.0, 32).view(-1, 1, 1, 1))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    sparsity.add_regularization_gradients()
    # bn1's scales belong to this group only: each received c_u * w_u, c_u between reg and 16 * reg.
    bn = model.layer2[1].bn1
    coefficient = (bn.weight.grad / bn.weight).detach()
    assert coefficient.min() == pytest.approx(REG, rel=1e-4) and coefficient.max() == pytest.approx(16 * REG, rel=1e-4)
    norms = _coupled_norms(model, "layer2.1.conv1").detach()
    assert coefficient.argmax() == norms.argmin() and coefficient.argmin() == norms.argmax()
    # The classifier's columns belong to the last stage's group; its classes (rows, bias) are never regularized.
    fc = model.get_classifier()
    per_element = (fc.weight.grad / fc.weight).detach()
    torch.testing.assert_close(per_element, per_element[:1].expand_as(per_element), rtol=1e-4, atol=0)
    assert torch.count_nonzero(fc.bias.grad) == 0


def test_run_regularizes_until_the_prune_at_half_the_run_then_stops(make_trainer, tmp_path, monkeypatch):
    calls = []
    original = GroupNormSparsity.add_regularization_gradients
    monkeypatch.setattr(GroupNormSparsity, "add_regularization_gradients", lambda self: calls.append(1) or original(self))
    trainer = make_trainer(tmp_path, pruning_method="tp_groupnorm", max_steps=8)
    trainer.train()
    (event,) = trainer.pruning_events
    assert "tp_groupnorm at step 4" in event["reason"]
    assert 0.5 <= event["macs_reduction"] < 0.51
    assert len(calls) == 4  # before the optimizer steps 1..4, none after the prune


def test_regularizer_changes_the_trajectory_and_tp_reg_is_validated(make_args, make_trainer, tmp_path):
    runs = []
    for name, reg in (("off", 0.0), ("on", 0.5)):
        trainer = make_trainer(tmp_path / name, pruning_method="tp_groupnorm", max_steps=4, tp_reg=reg)
        trainer.train()
        runs.append(trainer.model.layer1[0].conv1.weight.shape)
        runs.append(trainer.pruning_events[0]["widths"])
    assert runs[1] != runs[3]  # a strong group-sparsity term leads to another sub-network
    with pytest.raises(ValueError, match="tp_reg must be >= 0"):
        make_args(tmp_path, pruning_method="tp_groupnorm", tp_reg=-1e-4)


def test_head_groups_get_one_score_per_head_and_a_vit_run_prunes_heads(make_trainer, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=128, num_labels=4))
    example = torch.randn(1, 3, 32, 32)
    graph = StructureGraph(model, example)
    scores = GroupNormSparsity(graph, example, reg=REG).unit_scores()
    heads = [g for g in graph.groups if g.kind == "head"]
    assert heads and all(scores[g.name].shape == (4,) and torch.isfinite(scores[g.name]).all() for g in heads)
    trainer = make_trainer(tmp_path, model=model, pruning_method="tp_groupnorm", optim="adamw_torch",
                           learning_rate=1e-3, max_steps=6)
    trainer.train()
    assert trainer.pruning_events[0]["macs_reduction"] >= 0.5
    assert min(layer.attention.num_attention_heads for layer in trainer.model.vit.layers) < 4
