"""The run's plots: every group in model order, one panel per unit kind; curves at any logging cadence."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import PIL.Image
import timm

from hf_prune.plots import plot_layer_widths
from hf_prune.trainer.card import plot_training_curves


def _height(path) -> int:
    with PIL.Image.open(path) as image:
        return image.height


def test_widths_cover_every_group_in_model_order_and_the_plot_is_written(make_trainer, tmp_path):
    model = timm.create_model("resnet18", num_classes=4)
    trainer = make_trainer(tmp_path, model=model, pruning_method="magnitude", max_steps=4, save_strategy="no")
    trainer.train()
    widths = trainer._layer_widths()
    order = [name for name, _ in model.named_modules()]
    assert list(widths) == sorted(widths, key=order.index) and len(widths) == len(trainer.structure.groups) > 3
    assert any(before == now for before, now, _ in widths.values())  # unpruned groups are shown too
    assert any(before > now for before, now, _ in widths.values()) and {k for _, _, k in widths.values()} == {"channel"}
    assert _height(tmp_path / "pruned_widths.png") > 0


def test_heads_and_channels_get_their_own_panels(tmp_path):
    channels = {"conv1": (64, 32, "channel"), "layer1": (128, 128, "channel")}
    one = plot_layer_widths(channels, str(tmp_path / "one.png"))
    two = plot_layer_widths({**channels, "blocks.0.attn": (4, 2, "head")}, str(tmp_path / "two.png"))
    assert _height(two) > 1.5 * _height(one)  # a second panel with its own y axis


def _facts(log_history, prune_steps):
    return SimpleNamespace(log_history=log_history, record=SimpleNamespace(events=[{"global_step": s} for s in prune_steps]))


def test_training_curves_fall_back_to_the_run_mean_loss_and_mark_many_prunes(tmp_path, caplog):
    short_run = [{"eval_loss": 1.2, "eval_top1": 0.4, "step": 4}, {"train_loss": 0.9, "step": 8}]
    assert plot_training_curves(_facts(short_run, range(1, 50)), str(tmp_path / "curves.png"))
    two_panels = _height(tmp_path / "curves.png")
    only_loss = [{"train_loss": 0.9, "step": 8}]
    assert plot_training_curves(_facts(only_loss, [3]), str(tmp_path / "loss.png"))
    assert two_panels > 1.5 * _height(tmp_path / "loss.png")  # accuracy on its own axis, not beside the loss
    with caplog.at_level(logging.INFO, logger="hf_prune.trainer.card"):
        assert plot_training_curves(_facts([], []), str(tmp_path / "none.png")) is None
    assert "training_curves.png not written" in caplog.text and not (tmp_path / "none.png").exists()
