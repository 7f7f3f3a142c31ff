"""PruningTrainer: a physical prune mid-training, and everything rebuilt around it."""

from __future__ import annotations

import json

import pytest
import torch

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import count_macs_params
from hf_prune.methods import PruningMethod, PruningPlan
from hf_prune.structure import UnreachableTargetError



class _Spy(PruningMethod):
    """Prunes half of every group at a fixed step and records what the trainer held afterwards."""

    name = "spy"

    def __init__(self, step: int) -> None:
        self.step, self.seen = step, []

    def on_step_end(self, context):
        self.seen.append((context.state.global_step, sum(p.numel() for p in context.model.parameters())))
        if context.state.global_step == self.step:
            return PruningPlan({g.name: list(range(0, g.num_units, 2)) for g in context.graph.groups}, "spy")
        return None


def test_prune_mid_training_rebuilds_optimizer_and_scheduler(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none")
    trainer.pruning_method = _Spy(step=5)
    captured = {}
    original = trainer._rebuild_optimizer

    def capture(old_params, index_maps):
        captured["momentum"] = {n: trainer.optimizer.optimizer.state[p]["momentum_buffer"].clone()
                                for n, p in old_params.items() if p in trainer.optimizer.optimizer.state}
        captured["lr"] = trainer.optimizer.param_groups[0]["lr"]
        captured["scheduler_step"] = trainer.lr_scheduler.last_epoch
        original(old_params, index_maps)
        captured["maps"] = index_maps

    trainer._rebuild_optimizer = capture
    trainer.train()

    (event,) = trainer.pruning_events
    assert event["global_step"] == 5 and event["macs_after"] < 0.4 * event["macs_before"]
    # The optimizer updates exactly the model's (new) parameters, nothing else.
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.model.parameters()}
    # Training went on after the prune with the smaller model, to the planned last step.
    assert trainer.state.global_step == trainer.state.max_steps == 16
    assert trainer.pruning_method.seen[-1][1] == trainer.pruning_method.seen[5][1] < trainer.pruning_method.seen[0][1]
    # Scheduler continued from the same position (not restarted).
    assert trainer.lr_scheduler.last_epoch == trainer.state.max_steps
    assert captured["scheduler_step"] == 5


def test_momentum_is_sliced_to_the_surviving_channels(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=6)
    trainer.pruning_method = _Spy(step=5)
    snapshots = {}
    original = trainer._rebuild_optimizer

    def capture(old_params, index_maps):
        state = trainer.optimizer.optimizer.state
        snapshots["old"] = {n: state[p]["momentum_buffer"].clone() for n, p in old_params.items() if p in state}
        original(old_params, index_maps)
        state = trainer.optimizer.optimizer.state
        snapshots["new"] = {n: state[p]["momentum_buffer"].clone() for n, p in trainer.model.named_parameters()}
        snapshots["maps"] = index_maps

    trainer._rebuild_optimizer = capture
    trainer.train()
    changed = 0
    for name, new in snapshots["new"].items():
        old = snapshots["old"][name]
        assert torch.equal(new, old.flatten()[snapshots["maps"][name].flatten()].view(new.shape))
        changed += new.shape != old.shape
    assert changed > 10


def test_reset_policy_starts_the_optimizer_afresh(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=6, optimizer_state_after_prune="reset")
    trainer.pruning_method = _Spy(step=6)
    trainer.train()
    assert not trainer.optimizer.optimizer.state  # pruned at the last step: no step taken since


def test_magnitude_run_reaches_the_target_and_logs_it(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="magnitude", eval_around_prune=True, num_train_epochs=4)
    x = torch.randn(1, 3, 32, 32)
    dense_macs, _ = count_macs_params(trainer.model, x)
    trainer.train()

    macs, _ = count_macs_params(trainer.model, x)
    assert 0.5 <= 1 - macs / dense_macs < 0.51
    (event,) = trainer.pruning_events
    assert event["global_step"] == 8  # a quarter of 4 epochs x 8 steps
    assert event["metrics_before"]["eval_before_prune_loss"] > 0 and "eval_after_prune_loss" in event["metrics_after"]
    logged = [h for h in trainer.state.log_history if "pruning/macs_reduction" in h]
    assert len(logged) == 1 and logged[0]["pruning/macs_reduction"] == pytest.approx(1 - macs / dense_macs)
    assert trainer.evaluate()["eval_loss"] < 1.0  # ln(4) = 1.39 is chance



class _TwoSteps(PruningMethod):
    """Prunes a quarter of the first group at steps 2 and 4 (only the second marked last), as a search would."""

    name = "two_steps"

    def on_step_end(self, context):
        if context.state.global_step not in (2, 4):
            return None
        group = context.graph.groups[0]
        keep = list(range(group.num_units - group.num_units // 4))
        return PruningPlan({group.name: keep}, "step", last=context.state.global_step == 4)


@pytest.mark.parametrize(("events", "evaluated"), [("last", [False, True]), ("all", [True, True])])
def test_eval_around_prune_evaluates_around_the_events_asked_for(make_trainer, tmp_path, events, evaluated):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=5, eval_around_prune=True,
                           eval_around_prune_events=events)
    trainer.pruning_method = _TwoSteps()
    trainer.train()
    assert [e["global_step"] for e in trainer.pruning_events] == [2, 4]
    assert [e["metrics_before"] is not None for e in trainer.pruning_events] == evaluated
    assert [e["metrics_after"] is not None for e in trainer.pruning_events] == evaluated
    assert all(e["metrics_after"]["eval_after_prune_top1"] >= 0 for e in trainer.pruning_events if e["metrics_after"])


def _random_widths(make_trainer, tmp_path, seed: int) -> dict[str, list[int]]:
    trainer = make_trainer(tmp_path / str(seed), pruning_method="random", max_steps=4, seed=seed)
    trainer.train()
    (event,) = trainer.pruning_events
    assert 0.5 <= event["macs_reduction"] < 0.51 and event["reason"] == "one-shot random at step 1"
    return event["widths"]


def test_random_baseline_reaches_the_target_with_seeded_choices(make_trainer, tmp_path):
    first, again, other = (_random_widths(make_trainer, tmp_path / name, seed)
                           for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert first == again and first != other
    magnitude = make_trainer(tmp_path / "m", pruning_method="magnitude", max_steps=4)
    magnitude.train()
    assert magnitude.pruning_events[0]["widths"] != first  # not the saliency ranking


def test_transformers_vit_trains_through_a_head_prune(make_trainer, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=128, num_labels=4))
    trainer = make_trainer(tmp_path, model=model, pruning_method="magnitude", optim="adamw_torch", learning_rate=1e-3)
    trainer.train()
    heads = [layer.attention.num_attention_heads for layer in trainer.model.vit.layers]
    assert trainer.pruning_events and min(heads) >= 1 and trainer.pruning_events[0]["macs_reduction"] >= 0.5
    assert all(p.shape[0] == 4 for n, p in trainer.model.named_parameters() if n.startswith("classifier"))


class _TwoStep(PruningMethod):
    """At step 3 prunes a quarter of every group twice in a row, with recovery after each."""

    name = "two-step"

    def __init__(self) -> None:
        self.calls, self.snapshots = 0, []

    def on_step_end(self, context):
        if context.state.global_step != 3 or self.calls == 2:
            return None
        self.calls += 1
        self.snapshots.append({n: p.detach().clone() for n, p in context.model.named_parameters()})
        keep = {g.name: list(range(g.num_units - g.num_units // 4)) for g in context.graph.groups}
        return PruningPlan(keep, f"step {self.calls}", recovery_steps=4, continues=self.calls == 1)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_multi_step_plan_recovers_without_moving_the_schedule(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=5)
    trainer.pruning_method = _TwoStep()
    steps_seen = []
    original_recover = trainer.recover

    def recover(num_steps):
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        lr = trainer.optimizer.param_groups[0]["lr"]
        loss = original_recover(num_steps)
        after = dict(trainer.model.named_parameters())
        steps_seen.append((trainer.state.global_step, trainer.lr_scheduler.last_epoch, lr,
                           trainer.optimizer.param_groups[0]["lr"], loss))
        assert all(not torch.equal(before[n], after[n]) for n in before if n.endswith("conv1.weight"))
        return loss

    trainer.recover = recover
    trainer.train()

    assert [e["reason"] for e in trainer.pruning_events] == ["step 1", "step 2"]
    assert all(e["global_step"] == 3 for e in trainer.pruning_events)
    # The second step saw the first one's result: each group lost a quarter twice.
    first, second = trainer.pruning_events
    assert all(second["widths"][n][0] == first["widths"][n][1] for n in second["widths"])
    for global_step, scheduler_step, lr_before, lr_after, loss in steps_seen:
        assert (global_step, scheduler_step) == (3, 3) and lr_before == lr_after and loss > 0
    recovery_logs = [h for h in trainer.state.log_history if "pruning/recovery_loss" in h]
    assert [h["pruning/recovery_steps"] for h in recovery_logs] == [4.0, 4.0]
    assert trainer.state.global_step == 5


def test_recovery_steps_accumulate_micro_batches_like_training(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=1, gradient_accumulation_steps=2)
    trainer.train()
    micro_batches, optimizer_steps = [], []
    training_step, optimizer_step = trainer.training_step, trainer.optimizer.step
    trainer.training_step = lambda *args, **kwargs: micro_batches.append(1) or training_step(*args, **kwargs)
    trainer.optimizer.step = lambda *args, **kwargs: optimizer_steps.append(1) or optimizer_step(*args, **kwargs)
    trainer.recover(3)
    assert len(optimizer_steps) == 3 and len(micro_batches) == 6


def test_method_state_is_saved_in_checkpoints_and_restored_on_resume(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=5, save_strategy="steps", save_steps=4)
    trainer.pruning_method = _TwoStep()
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-4" / "pruning_state.json").read_text())
    assert saved["method"] == "two-step" and saved["method_state"] == {"calls": 2}
    assert [e["reason"] for e in saved["pruning_events"]] == ["step 1", "step 2"]

    resumed = make_trainer(tmp_path, pruning_method="none", max_steps=5)
    resumed.pruning_method = _TwoStep()
    resumed._read_pruning_state(str(tmp_path / "checkpoint-4"))
    resumed._on_train_begin()
    assert resumed.pruning_method.calls == 2 and len(resumed.pruning_events) == 2


def test_resuming_with_another_method_is_refused(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=4)
    trainer.train()
    with pytest.raises(ValueError, match="pruning_method='magnitude'.*resume with the same method"):
        make_trainer(tmp_path, pruning_method="none", max_steps=5).train(resume_from_checkpoint=True)


def test_unreachable_target_fails_before_training(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, target_flops_reduction=0.97, layer_prune_limit=0.5)
    with pytest.raises(UnreachableTargetError, match="unreachable"):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target_flops_reduction": 1.2}, r"target_flops_reduction must lie in \(0, 1\)"),
        ({"target_flops_reduction": 0.0}, r"target_flops_reduction must lie in \(0, 1\)"),
        ({"pruning_method": "prune-everything"}, "unknown pruning_method 'prune-everything'"),
        ({"fsdp": "full_shard"}, "FSDP and DeepSpeed are not supported"),
        ({"hub_strategy": "checkpoint"}, "hub_strategy='checkpoint' would upload checkpoint folders"),
        ({"deepspeed": "ds_config.json"}, "FSDP and DeepSpeed are not supported"),
        ({"optimizer_state_after_prune": "keep"}, "optimizer_state_after_prune"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(make_args, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **overrides)
