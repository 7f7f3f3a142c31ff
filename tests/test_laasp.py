"""LAASP: criteria, step sizes, masked == physical losses, full runs, determinism and resume."""

from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import TrainerState

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import PruningArguments, PruningTrainer
from hf_prune.data import collate_image_batch, load_image_classification_data, with_transforms
from hf_prune.methods import CRITERIA, LAASPPruning, PruningContext, create_method, get_criterion, register_criterion
from hf_prune.methods.subset_loss import SubsetLoss, dataset_labels, stratified_indices
from hf_prune.methods.criteria import unit_weights
from hf_prune.metrics import compute_topk_metrics
from hf_prune.models import load_model
from hf_prune.structure import TARGET_TOLERANCE, MacsModel, StructureGraph, UnreachableTargetError


X = torch.randn(1, 3, 32, 32)


class _Noise(Dataset):
    """Random images with balanced labels: enough to drive a search without training."""

    def __init__(self, n: int = 64, classes: int = 10, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.labels = [i % classes for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def _args(tmp_path, **overrides) -> PruningArguments:
    settings = dict(output_dir=str(tmp_path), pruning_method="laasp", report_to=[], use_cpu=True, disable_tqdm=True,
                    laasp_subset_size=32, laasp_batch_size=16, laasp_screen_fraction=0.0, laasp_race=0.0, seed=0)
    settings.update(overrides)
    return PruningArguments(**settings)


def _context(model, args, dense_macs=None, dataset=None, step=10, logged=None) -> PruningContext:
    graph = StructureGraph(model, X)
    macs = MacsModel(graph, X)
    state = TrainerState(max_steps=100, num_train_epochs=10, global_step=step)
    return PruningContext(model=model, graph=graph, macs=macs, dense_macs=dense_macs or macs.base_macs, args=args,
                          state=state, learning_rate=0.1, train_dataset=dataset or _Noise(),
                          data_collator=collate_image_batch,
                          log=logged.update if logged is not None else lambda metrics: None)


def _calibrated(name: str, **kwargs) -> torch.nn.Module:
    """A random-init model with BatchNorm statistics of real activations (sane loss magnitudes)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


# ---------------------------------------------------------------------------------------------- criteria
def test_criteria_rank_hand_made_filters():
    # Norms: row 0 is smallest in both; rows 1/2 swap places between L1 (0.6 vs 0.5) and L2 (0.42 vs 0.5).
    norms = torch.tensor([[0.1, 0.0], [0.3, 0.3], [0.5, 0.0], [2.0, 2.0]])
    assert get_criterion("l1")(norms).argsort().tolist() == [0, 2, 1, 3]
    assert get_criterion("l2")(norms).argsort().tolist() == [0, 1, 2, 3]
    # Geometric median: (1, 1) is nearest to all others, although (0, 0) has the smallest norm.
    spread = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    assert get_criterion("fpgm")(spread).argmin() == 3
    assert get_criterion("l2")(spread).argmin() == 0
    # Cosine: three filters point almost the same way (the middle one is the most redundant), one the other way.
    directions = torch.tensor([[4.0, 0.5], [4.0, 0.0], [4.0, -0.5], [-0.1, 0.0]])
    scores = get_criterion("cosine")(directions)
    assert scores.argmin() == 1 and scores.argmax() == 3
    assert get_criterion("l1")(directions).argmin() == 3  # the norm criteria would prune the outlier


def test_custom_criteria_can_be_registered_and_unknown_ones_name_the_fix():
    register_criterion("test_random", lambda w: torch.arange(len(w), 0, -1, dtype=torch.float32))
    try:
        assert get_criterion("test_random")(torch.zeros(3, 2)).argmin() == 2
        with pytest.raises(ValueError, match="already registered"):
            register_criterion("test_random", lambda w: w.sum(1))
    finally:
        del CRITERIA["test_random"]
    with pytest.raises(ValueError, match="register_criterion"):
        get_criterion("taylor")


def test_unit_weights_concatenate_every_producing_conv_of_a_residual_group():
    model = timm.create_model("cifar_resnet20", num_classes=10)
    stem = next(g for g in StructureGraph(model, X).groups if g.name == "conv1")
    weights = unit_weights(model, stem)
    # The stem conv (3x3x3) and the three conv2 of stage 1 (16x3x3 each) add into one stream.
    assert weights.shape == (16, 27 + 3 * 144)
    assert torch.equal(weights[5, :27], model.conv1.weight[5].flatten())


# ---------------------------------------------------------------------------------------------- step sizes
def test_one_step_removes_about_flops_step_of_the_dense_macs(tmp_path):
    model = timm.create_model("cifar_resnet56", num_classes=10)
    context = _context(model, _args(tmp_path, laasp_flops_step=0.01, layer_prune_limit=0.9))
    method = LAASPPruning()
    method.dense_units = {g.name: g.num_units for g in context.graph.groups}
    method.step_sizes = method.dense_step_sizes(context)
    dense = context.dense_macs
    checked = 0
    for group in context.graph.groups:
        count = method.step_units(context, group.name)
        per_unit = context.macs.macs_per_unit(group.name) / dense
        removed = context.macs.reduction({group.name: count})
        if per_unit < 0.01:  # a group where one unit is more than a step removes one unit instead
            assert removed == pytest.approx(0.01, abs=0.5 * per_unit + 1e-9)
            checked += 1
    assert checked > 20


def test_step_sizes_are_fixed_on_the_dense_model(tmp_path):
    model = timm.create_model("cifar_resnet20", num_classes=10)
    args = _args(tmp_path, laasp_flops_step=0.01, laasp_prune_start=0.0, layer_prune_limit=0.9)
    dense = _context(model, args)
    method = LAASPPruning()
    method.on_train_begin(dense)
    dense_step = method.step_units(dense, "layer3.0.conv1")
    # Halving the stream feeding layer3.0.conv1 halves its MACs per unit: a recomputed step would double.
    stream = next(g for g in dense.graph.groups if "layer2.2.conv2" in g.modules)
    StructureGraph(model, X).apply({stream.name: list(range(stream.num_units // 2))})
    pruned = _context(model, args, dense_macs=dense.dense_macs)
    assert method.dense_step_sizes(pruned)["layer3.0.conv1"] > dense_step  # what a per-step recompute would take
    assert method.step_units(pruned, "layer3.0.conv1") == dense_step


def test_recovery_follows_the_final_step_too(tmp_path):
    model = _calibrated("cifar_resnet20")
    args = _args(tmp_path, laasp_flops_step=0.02, target_flops_reduction=0.01, laasp_recover_flops=0.01,
                 laasp_prune_start=0.0, laasp_recovery_epochs=0.5)
    context = _context(model, args)
    method = LAASPPruning()
    method.on_train_begin(context)
    plan = method.on_step_end(context)  # one step reaches the 1 % target
    assert method.history[-1]["reduction"] >= 0.01 and plan.recovery_steps == 5  # 0.5 epochs of 10 steps
    assert plan.last  # what eval_around_prune_events="last" evaluates around


def test_only_the_step_that_reaches_the_target_is_marked_last(tmp_path):
    model = _calibrated("cifar_resnet20")
    args = _args(tmp_path, laasp_flops_step=0.01, target_flops_reduction=0.05, laasp_prune_start=0.0)
    context = _context(model, args)
    method = LAASPPruning()
    method.on_train_begin(context)
    plan = method.on_step_end(context)
    assert method.history[-1]["reduction"] < 0.05 and plan.continues and not plan.last


def test_the_last_step_removes_only_what_reaching_the_target_needs(tmp_path):
    model = _calibrated("cifar_resnet20")
    args = _args(tmp_path, laasp_flops_step=0.05, target_flops_reduction=0.01, laasp_prune_start=0.0)
    context = _context(model, args)
    context.width_multiples = {g.name: 4 for g in context.graph.groups}
    method = LAASPPruning()
    method.on_train_begin(context)
    method.on_step_end(context)
    step = method.history[-1]
    group = next(g for g in context.graph.groups if g.name == step["group"])
    one_multiple = 4 * context.macs.macs_per_unit(group.name) / context.dense_macs
    assert (group.num_units - len(step["removed"])) % 4 == 0  # still a multiple of round_to kept
    assert 0.01 <= step["reduction"] < 0.01 + one_multiple  # a full 5 % step would overshoot
    assert len(step["removed"]) < method.step_units(context, group.name)


def _rigged_last_step(tmp_path, multiple: int, target: float) -> tuple[LAASPPruning, PruningContext, list[float]]:
    """One search step where the candidate that removes the most MACs scores the lowest subset loss.

    Returns the method after the step, its context and every candidate's reduction.
    """
    model = _calibrated("cifar_resnet20")
    args = _args(tmp_path, laasp_flops_step=0.05, target_flops_reduction=target, laasp_prune_start=0.0)
    context = _context(model, args)
    context.width_multiples = {g.name: multiple for g in context.graph.groups}
    method = LAASPPruning()
    method.on_train_begin(context)
    reductions = [context.macs.reduction({c.group: len(c.removed)}) for c in method.candidates(context)]
    # Loss falls with the MACs a candidate removes: by loss alone the coarsest step wins.
    method.evaluate = lambda context, candidates, screen=True: (
        [-context.macs.reduction({c.group: len(c.removed)}) for c in candidates], 0.0
    )
    method.on_step_end(context)
    return method, context, reductions


def test_the_last_step_prefers_a_candidate_that_does_not_overshoot_the_target(tmp_path):
    method, _, reductions = _rigged_last_step(tmp_path, multiple=4, target=0.01)
    assert max(reductions) > 0.01 + TARGET_TOLERANCE  # a 4-channel step of a 16-channel stage: about 3 %
    assert any(0.01 <= r <= 0.01 + TARGET_TOLERANCE for r in reductions)
    assert 0.01 <= method.history[-1]["reduction"] <= 0.01 + TARGET_TOLERANCE


def test_when_every_candidate_overshoots_the_least_overshoot_ends_the_search(tmp_path):
    method, _, reductions = _rigged_last_step(tmp_path, multiple=16, target=0.005)
    assert min(reductions) > 0.005 + TARGET_TOLERANCE
    assert method.history[-1]["reduction"] == pytest.approx(min(reductions))
    assert min(reductions) < max(reductions)  # the rigged losses favour the largest


def test_recovery_that_would_round_to_no_step_runs_one_and_says_so(tmp_path, caplog):
    model = _calibrated("cifar_resnet20")
    args = _args(tmp_path, laasp_flops_step=0.02, target_flops_reduction=0.01, laasp_recover_flops=0.01,
                 laasp_prune_start=0.0, laasp_recovery_epochs=0.01)  # 0.1 of an optimizer step
    context = _context(model, args)
    method = LAASPPruning()
    with caplog.at_level("WARNING"):
        method.on_train_begin(context)
    assert "laasp_recovery_epochs=0.01 is 0.10 optimizer steps" in caplog.text
    assert method.on_step_end(context).recovery_steps == 1
    zero = _args(tmp_path, laasp_recover_flops=0.01, laasp_prune_start=0.0, laasp_recovery_epochs=0.0)
    off = LAASPPruning()
    off.on_train_begin(_context(model, zero))
    assert off._recovery_steps == 0  # 0 still turns recovery off


def test_search_announces_its_size_then_its_duration_with_names(tmp_path, capsys):
    model = _calibrated("cifar_resnet20")
    args = _args(tmp_path, laasp_flops_step=0.1, target_flops_reduction=0.25, laasp_prune_start=0.0)
    logged: dict = {}
    context = _context(model, args, logged=logged)
    method = LAASPPruning()
    method.on_train_begin(context)
    plan = method.on_step_end(context)
    candidates = logged["pruning/laasp_candidates_per_step"]
    assert logged["pruning/laasp_estimated_steps"] == 3  # 25 % in steps of 10 %
    assert logged["pruning/laasp_candidate_images_per_step"] == candidates * 32  # no screening: all on 32 images
    assert logged["pruning/laasp_estimated_search_seconds"] == pytest.approx(3 * method.history[0]["seconds"])
    printed = capsys.readouterr().out
    assert f"about 3 steps of 10.0% MACs to 25.0%, each scoring {int(candidates)} candidates" in printed
    assert "the first step took" in printed
    assert not any("index" in key for key in logged)  # names, not indices
    step = method.history[0]
    assert step["group"] in plan.reason and step["criterion"] in plan.reason and step["criterion"] in CRITERIA


def test_groups_at_their_floor_are_no_candidates(tmp_path):
    model = timm.create_model("cifar_resnet20", num_classes=10)
    context = _context(model, _args(tmp_path, layer_prune_limit=0.5, laasp_flops_step=0.2))
    method = LAASPPruning()
    method.dense_units = {g.name: g.num_units * 2 for g in context.graph.groups}  # as if half were gone already
    method.dense_units["layer3.0.conv1"] = 120  # floor 60 of the 64 units left: 4 may go
    method.step_sizes = method.dense_step_sizes(context)
    candidates = method.candidates(context)
    assert candidates and all(c.group == "layer3.0.conv1" and len(c.removed) == 4 for c in candidates)


def test_loss_subset_is_stratified_and_read_without_decoding_images():
    labels = [0] * 50 + [1] * 30 + [2] * 5
    chosen = stratified_indices(labels, 12, seed=0)
    assert sorted(Counter(labels[i] for i in chosen).values()) == [4, 4, 4]
    assert chosen[:3] != stratified_indices(labels, 12, seed=1)[:3] and len(set(chosen)) == 12
    assert sorted(Counter(labels[i] for i in stratified_indices(labels, 30, seed=0)).values()) == [5, 12, 13]
    data = load_image_classification_data("builtin:digits", seed=0, max_train_samples=200, max_eval_samples=50)
    loaded = load_model("cifar_resnet20", num_labels=10)
    train = with_transforms(data, loaded.data_config, hflip=False).train
    assert dataset_labels(train) == [train[i]["labels"] for i in range(len(train))]


# ---------------------------------------------------------------------------------------------- masked == physical
@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar_resnet56", "mobilenetv3_small_100"])
def test_masked_loss_equals_the_loss_after_a_physical_prune(tmp_path, name):
    model = _calibrated(name)
    context = _context(model, _args(tmp_path, laasp_flops_step=0.03, laasp_subset_size=16))
    method = LAASPPruning()
    method.dense_units = {g.name: g.num_units for g in context.graph.groups}
    method.step_sizes = method.dense_step_sizes(context)
    candidates = method.candidates(context)
    by_group: dict[str, list] = {}
    for c in candidates:
        by_group.setdefault(c.group, []).append(c)
    # The first group (stem/residual stream), a middle one and the last one, each with another criterion.
    groups = list(by_group)
    picks = [groups[0], groups[len(groups) // 2], groups[-1]]
    chosen = [by_group[g][i % len(by_group[g])] for i, g in enumerate(picks)]
    assert len({c.criteria[0] for c in chosen}) > 1
    masked, _ = method.evaluate(context, chosen)
    for candidate, loss in zip(chosen, masked):
        pruned = copy.deepcopy(model)
        graph = StructureGraph(pruned, X)
        units = next(g.num_units for g in graph.groups if g.name == candidate.group)
        graph.apply({candidate.group: [u for u in range(units) if u not in candidate.removed]})
        with torch.no_grad():
            total = sum(float(F.cross_entropy(pruned(b["pixel_values"]), b["labels"], reduction="sum"))
                        for b in method._subset)
        physical = total / sum(len(b["labels"]) for b in method._subset)
        assert loss == pytest.approx(physical, abs=1e-5), (candidate, loss, physical)


def test_screening_keeps_the_best_candidates_losses_exact(tmp_path):
    model = _calibrated("cifar_resnet20")
    full = _context(model, _args(tmp_path, laasp_subset_size=32, laasp_batch_size=8, laasp_flops_step=0.05))
    screened = _context(model, _args(tmp_path, laasp_subset_size=32, laasp_batch_size=8, laasp_flops_step=0.05,
                                     laasp_screen_fraction=0.25, laasp_screen_keep=3))
    method = LAASPPruning()
    method.dense_units = {g.name: g.num_units for g in full.graph.groups}
    method.step_sizes = method.dense_step_sizes(full)
    candidates = method.candidates(full)[::3]
    exact, _ = method.evaluate(full, candidates)
    cheap, _ = method.evaluate(screened, candidates)
    kept = [i for i, loss in enumerate(cheap) if math.isfinite(loss)]
    assert len(kept) == 3
    for i in kept:
        assert cheap[i] == pytest.approx(exact[i], abs=1e-6)


class _TableLoss(SubsetLoss):
    """SubsetLoss over a table of per-batch loss sums (candidates and batches are indices); records its calls."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(model=None, batches=list(range(table.shape[1])), prefix=None)
        self.table = table.double()
        self.calls: list[tuple[list[int], list[int]]] = []

    def batch_sums(self, candidates, batches):
        self.calls.append((list(candidates), list(batches)))
        ones = torch.ones(len(batches), dtype=torch.float64)
        return self.table[candidates][:, batches], torch.zeros(len(batches), dtype=torch.float64), ones


def test_race_drops_a_clearly_worse_candidate_early_and_keeps_close_ones_exact():
    wobble = torch.tensor([0.01, -0.01] * 4)
    table = torch.stack([1.0 + wobble, 1.0 - wobble, 3.0 + wobble])  # 0 and 1 tie on average; 2 is far worse
    raced = _TableLoss(table)
    losses = raced.mean_losses([0, 1, 2], race=2.0)
    assert losses[2] == math.inf and losses[:2] == pytest.approx([1.0, 1.0])
    assert [candidates for candidates, _ in raced.calls] == [[0, 1, 2]] * 3 + [[0, 1]] * 5  # 2 dropped after batch 3
    assert _TableLoss(table).mean_losses([0, 1, 2]) == pytest.approx([1.0, 1.0, 3.0])  # race 0: all, whole subset
    # After screening (1 of 8 batches) keeps 2 of 3 and one leads clearly, the race ends with it alone.
    lead = _TableLoss(torch.stack([1.0 + wobble, 1.5 + wobble, 3.0 + wobble]))
    losses = lead.mean_losses([0, 1, 2], screen_fraction=0.125, screen_keep=2, race=2.0)
    assert losses[0] == pytest.approx(3.01 / 3) and losses[1:] == [math.inf, math.inf]  # on the 3 batches seen
    assert lead.calls[-1][1] == [2] and len(lead.calls) == 3  # 3 batches seen, then 1 is left


# ---------------------------------------------------------------------------------------------- runs
def _mnist_trainer(tmp_path, **overrides) -> PruningTrainer:
    torch.manual_seed(0)  # before the model is built: its init must not depend on earlier tests
    data = load_image_classification_data("builtin:mnist5k", seed=0, max_train_samples=1024, max_eval_samples=300)
    loaded = load_model("cifar_resnet20", num_labels=10)
    data = with_transforms(data, loaded.data_config, hflip=False)
    settings = dict(
        num_train_epochs=3, per_device_train_batch_size=32, per_device_eval_batch_size=300, learning_rate=0.05,
        optim="sgd", optim_args="momentum=0.9", lr_scheduler_type="cosine", save_strategy="no", logging_steps=50,
        target_flops_reduction=0.5, laasp_flops_step=0.05, laasp_subset_size=128, laasp_batch_size=64,
        laasp_screen_fraction=0.5, laasp_screen_keep=4, laasp_recover_flops=0.15, laasp_prune_start=1.0,
    )
    settings.update(overrides)
    return PruningTrainer(model=loaded.model, args=_args(tmp_path, **settings), train_dataset=data.train,
                          eval_dataset=data.validation, data_collator=collate_image_batch,
                          compute_metrics=compute_topk_metrics)


@pytest.mark.slow
def test_laasp_run_on_mnist_reaches_the_target_with_non_uniform_widths(tmp_path):
    trainer = _mnist_trainer(tmp_path)
    trainer.train()
    method = trainer.pruning_method
    reductions = [step["reduction"] for step in method.history]
    assert reductions[-1] >= 0.5 and reductions[-2] < 0.5  # stopped at the first step past the target
    assert reductions[-1] - reductions[-2] < 0.05 + 0.03  # one step: 5 % of the dense MACs, give or take a unit
    assert trainer.pruning_events[-1]["macs_reduction"] == pytest.approx(reductions[-1], abs=0.005)
    assert method.phase == "done" and trainer.state.global_step == trainer.state.max_steps
    kept = {round(g.num_units / method.dense_units[g.name], 2) for g in trainer.structure.groups}
    assert len(kept) > 2  # per-group rates differ
    assert any(step["recovery_steps"] > 0 for step in method.history)
    assert trainer.evaluate()["eval_top1"] > 0.4  # 10 classes: chance is 0.1
    logged = [h for h in trainer.state.log_history if "pruning/laasp_step" in h]
    assert [h["pruning/laasp_step"] for h in logged] == list(range(1, len(method.history) + 1))
    assert (tmp_path / "laasp_search.png").exists()


def _blob_run(blobs, tmp_path, **overrides) -> PruningTrainer:
    torch.manual_seed(0)
    settings = dict(num_train_epochs=2, per_device_train_batch_size=32, learning_rate=0.05, optim="sgd",
                    save_strategy="no", laasp_flops_step=0.1, target_flops_reduction=0.3, laasp_prune_start=0.5)
    settings.update(overrides)
    return PruningTrainer(model=timm.create_model("cifar_resnet20", num_classes=4),
                          args=_args(tmp_path, **settings), train_dataset=blobs(), eval_dataset=blobs(64, 1))


def _choices(method: LAASPPruning) -> list[tuple]:
    return [(s["group"], s["criterion"], tuple(s["removed"])) for s in method.history]


def test_same_seed_same_sequence_of_choices(blobs, tmp_path):
    first, second = _blob_run(blobs, tmp_path / "a"), _blob_run(blobs, tmp_path / "b")
    first.train()
    second.train()
    assert len(first.pruning_method.history) >= 3
    assert _choices(first.pruning_method) == _choices(second.pruning_method)


def test_lazy_step_rescores_the_leaders_the_group_pruned_last_and_new_candidates():
    from hf_prune.methods.laasp import Candidate

    pairs = [("a", "l1"), ("a", "fpgm"), ("b", "l1"), ("c", "l1"), ("d", "l1"), ("e", "l1")]
    candidates = [Candidate(group, (criterion,), (0,)) for group, criterion in pairs]
    method = LAASPPruning()
    assert method.to_rescore(candidates, top=2) == [0, 1, 2, 3, 4, 5]  # first step: all
    method.loss_increase = {"a/l1": 0.5, "a/fpgm": 0.1, "b/l1": 0.3, "c/l1": 0.05, "d/l1": 0.9}
    method.history = [{"group": "d"}]
    # leaders c (0.05) and a/fpgm (0.1); d was pruned last; e was never scored
    assert method.to_rescore(candidates, top=2) == [1, 3, 4, 5]
    assert method.to_rescore(candidates, top=0) == [0, 1, 2, 3, 4, 5]  # exhaustive


def test_audit_records_agreement_and_the_exhaustive_search_agrees_with_itself(blobs, tmp_path):
    lazy = _blob_run(blobs, tmp_path / "lazy", laasp_audit=True, laasp_rescore_top=1)
    exhaustive = _blob_run(blobs, tmp_path / "full", laasp_audit=True, laasp_rescore_top=0)
    lazy.train()
    exhaustive.train()
    assert all(step["agrees"] for step in exhaustive.pruning_method.history)
    history = lazy.pruning_method.history
    assert len(history) >= 3 and all(isinstance(step["agrees"], bool) for step in history)
    scored = [h["pruning/laasp_candidates"] for h in lazy.state.log_history if "pruning/laasp_candidates" in h]
    full = [h["pruning/laasp_candidates"] for h in exhaustive.state.log_history if "pruning/laasp_candidates" in h]
    assert scored[0] == full[0] and max(scored[1:]) < full[0]  # later lazy steps score fewer candidates


def test_floor_before_target_fails_before_training(blobs, tmp_path):
    # round_to 1: with 80 % floors, every group of cifar_resnet20 rounded up to its multiple would stay whole
    trainer = _blob_run(blobs, tmp_path, target_flops_reduction=0.6, layer_prune_limit=0.2, laasp_flops_step=0.08,
                        round_to="1")
    with pytest.raises(UnreachableTargetError, match=r"60\.0% is unreachable for LAASP.*layer_prune_limit=0\.2") as error:
        trainer.train()
    assert trainer.state.global_step == 0 and not trainer.pruning_method.history
    reachable = float(re.search(r"at most (\d+\.\d)%", str(error.value)).group(1))
    assert 10 < reachable < 60


def test_restored_state_continues_with_the_same_choice(tmp_path):
    args = _args(tmp_path, laasp_flops_step=0.05, target_flops_reduction=0.5, laasp_prune_start=0.0)
    model = _calibrated("cifar_resnet20")
    context = _context(model, args)
    dense = context.dense_macs
    method = LAASPPruning()
    method.on_train_begin(context)
    plan = method.on_step_end(context)
    assert plan is not None and plan.continues and method.phase == "search"
    StructureGraph(model, X).apply(plan.keep)

    saved = json.loads(json.dumps(method.state_dict()))
    resumed = LAASPPruning()
    resumed.on_train_begin(_context(model, args, dense))
    resumed.load_state_dict(saved)
    next_original = method.on_step_end(_context(model, args, dense))
    next_resumed = resumed.on_step_end(_context(model, args, dense))
    assert next_resumed.keep == next_original.keep and next_resumed.reason == next_original.reason
    assert _choices(resumed) == _choices(method) and len(method.history) == 2


def test_prune_start_outside_the_run_fails_at_train_begin(tmp_path):
    method = create_method("laasp")
    assert isinstance(method, LAASPPruning)
    with pytest.raises(ValueError, match="laasp_prune_start=12 epochs falls at step 120.*lower laasp_prune_start"):
        method.on_train_begin(_context(timm.create_model("cifar_resnet20"), _args(tmp_path, laasp_prune_start=12)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"laasp_flops_step": 0.0}, r"laasp_flops_step must lie in \(0, 1\)"),
        ({"laasp_recover_flops": 1.5}, r"laasp_recover_flops must lie in \(0, 1\)"),
        ({"laasp_criteria": []}, "laasp_criteria must name at least one criterion"),
        ({"laasp_criteria": ["l1", "l1"]}, "each once"),
        ({"laasp_subset_size": 0}, "laasp_subset_size must be at least 1"),
        ({"laasp_screen_fraction": 1.0}, r"laasp_screen_fraction must lie in \[0, 1\)"),
        ({"laasp_rescore_top": -1}, "laasp_rescore_top must be >= 0"),
        ({"laasp_race": -1.0}, "laasp_race must be >= 0"),
        ({"laasp_prune_start": -1.0}, "laasp_prune_start must be >= 0"),
    ],
)
def test_bad_laasp_arguments_are_refused_with_the_fix(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **overrides)


def test_unknown_criterion_fails_at_train_begin(tmp_path):
    with pytest.raises(ValueError, match="unknown criterion 'taylor'"):
        LAASPPruning().on_train_begin(_context(timm.create_model("cifar_resnet20"), _args(tmp_path, laasp_criteria=["taylor"])))
