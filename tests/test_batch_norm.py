"""BatchNorm recalibration for the evaluations right before and right after a prune."""

from __future__ import annotations

import torch
from torch import nn

from hf_prune.trainer._batch_norm import recalibrated_batch_norm


class _ModeProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def test_statistics_are_the_batches_average_inside_and_restored_after():
    torch.manual_seed(0)
    probe = _ModeProbe()
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.3), probe, nn.Conv2d(3, 2, 1))
    model.train()
    model[0].running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(4, 3, 2, 2) * 3 + torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1) for _ in range(3)]
    with recalibrated_batch_norm(model, batches) as count:
        assert count == 1 and not model[0].training
        per_batch_mean = torch.stack([b.mean((0, 2, 3)) for b in batches])
        per_batch_var = torch.stack([b.transpose(0, 1).reshape(3, -1).var(1) for b in batches])
        torch.testing.assert_close(model[0].running_mean, per_batch_mean.mean(0))
        torch.testing.assert_close(model[0].running_var, per_batch_var.mean(0))
    assert probe.seen == [False] * 3  # only BatchNorm ran in training mode (no dropout noise)
    assert model.training and model[0].momentum == 0.3
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_model_without_batch_norm_is_left_alone():
    model = nn.Linear(3, 2)
    with recalibrated_batch_norm(model, iter(lambda: 1 / 0, None)) as count:  # the batches are never read
        assert count == 0


def test_evaluating_around_the_prune_does_not_change_the_training_run(make_trainer, tmp_path):
    finals = []
    for name, around in (("plain", False), ("evaluated", True)):
        trainer = make_trainer(tmp_path / name, pruning_method="magnitude", max_steps=12, eval_around_prune=around)
        trainer.train()
        finals.append(trainer.model.state_dict())
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])  # weights and BN statistics
    event = trainer.pruning_events[0]
    assert 0.0 <= event["metrics_after"]["eval_after_prune_top1"] <= 1.0
    # eval_seconds covers both evaluations (and the recalibration), so the benchmark can take it out of train time
    runtimes = event["metrics_before"]["eval_before_prune_runtime"] + event["metrics_after"]["eval_after_prune_runtime"]
    assert event["eval_seconds"] >= runtimes > 0


def test_both_evaluations_around_the_prune_re_estimate_batch_norm(make_trainer, tmp_path, monkeypatch):
    import hf_prune.trainer.pruning_trainer as trainer_module

    calls = []
    real = trainer_module.recalibrated_batch_norm

    def counting(model, batches):
        calls.append(type(model).__name__)
        return real(model, batches)

    monkeypatch.setattr(trainer_module, "recalibrated_batch_norm", counting)
    for batches, expected in ((8, 2), (0, 0)):
        calls.clear()
        trainer = make_trainer(tmp_path / str(batches), pruning_method="magnitude", max_steps=6,
                               eval_around_prune=True, eval_after_prune_bn_batches=batches)
        trainer.train()
        assert len(trainer.pruning_events) == 1
        assert len(calls) == expected  # right before and right after: comparable statistics, or neither
