"""What a ``PruningTrainer`` knows, turned into the model card's inputs and plots."""

from __future__ import annotations

import copy
import dataclasses
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from hf_prune.hub.model_card import ModelCardInputs, ModelMeasurements
from hf_prune.latency import measure_latency_ms
from hf_prune.plots import plot_curves

if TYPE_CHECKING:
    from hf_prune.trainer.pruning_trainer import PruningTrainer

CURVES_PLOT_NAME = "training_curves.png"
LATENCY_BATCH_SIZES = (1, 64)
# Filled in by TrainingArguments.__post_init__ or by the trainer, not chosen by the user.
_DERIVED = frozenset({"accelerator_config", "label_names", "logging_dir"})


def card_inputs(trainer: PruningTrainer, repo_id: str, card_kwargs: dict[str, Any], figures: list[tuple[str, str]]) -> ModelCardInputs:
    """The card of ``trainer``'s model now, with ``card_kwargs`` from ``create_model_card``."""
    events = trainer.pruning_events
    dense_metrics = (events[0].get("metrics_before") or {}) if events else {}
    final_metrics = _last_eval(trainer.state.log_history)
    dense = ModelMeasurements(
        f"dense (right before the prune, epoch {events[0]['epoch']:.2f})" if dense_metrics else "dense",
        top1=dense_metrics.get("eval_before_prune_top1"),
        top5=dense_metrics.get("eval_before_prune_top5"),
        macs=trainer.dense_macs,
        params=events[0]["params_before"] if events else _num_params(trainer.model),
    )
    pruned = ModelMeasurements(
        "pruned (end of training)",
        top1=final_metrics.get("eval_top1"),
        top5=final_metrics.get("eval_top5"),
        macs=trainer.macs_model.base_macs if trainer.pruning_method.name != "none" else trainer.dense_macs,
        params=_num_params(trainer.model),
    )
    if trainer.args.card_latency:
        _measure_latency(trainer, dense, pruned)
    tags = card_kwargs.get("tags") or []
    return ModelCardInputs(
        model_name=card_kwargs.get("model_name") or os.path.basename(os.path.abspath(trainer.args.output_dir)),
        repo_id=repo_id,
        source=trainer.model_source,
        method=trainer.pruning_method.name,
        target=trainer.args.target_flops_reduction,
        dense=dense,
        pruned=pruned,
        events=events,
        arguments=non_default_arguments(trainer.args),
        command=shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        figures=figures,
        base_model=card_kwargs.get("finetuned_from"),
        dataset_id=_first(card_kwargs.get("dataset_tags")),
        dataset_name=_first(card_kwargs.get("dataset")),
        license=card_kwargs.get("license"),
        tags=[tags] if isinstance(tags, str) else list(tags),
    )


def plot_training_curves(trainer: PruningTrainer, path: str) -> str | None:
    """Training loss and eval top-1 over the global step, prune events marked; ``None`` without logs."""
    history = trainer.state.log_history
    curves = {
        "train loss": [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h],
        "eval top-1": [(h["step"], h["eval_top1"]) for h in history if "eval_top1" in h and "step" in h],
    }
    if not any(curves.values()):
        return None
    markers = {f"prune {i + 1}": e["global_step"] for i, e in enumerate(trainer.pruning_events[:5])}
    return plot_curves(curves, path, xlabel="global step", ylabel="loss / accuracy", title="Training", markers=markers)


def non_default_arguments(args: Any) -> dict[str, Any]:
    """The training arguments that differ from their dataclass defaults (tokens left out)."""
    values = args.to_dict()
    shown = {}
    for f in dataclasses.fields(args):
        if not f.init or f.name not in values or f.name.endswith("token"):
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = values[f.name]
        unset = not value and not default  # e.g. None turned into [] by __post_init__
        if not unset and value != default and value != getattr(default, "value", default) and f.name not in _DERIVED:
            shown[f.name] = value
    return shown


def _measure_latency(trainer: PruningTrainer, dense: ModelMeasurements, pruned: ModelMeasurements) -> None:
    input_size = tuple(trainer._example_inputs().shape[1:])
    slim = copy.deepcopy(trainer.model).cpu().float()
    dense_model = trainer.model_source.build("cpu")
    for row, model in ((dense, dense_model), (pruned, slim)):
        row.latency_ms_bs1, row.latency_ms_bs64 = (
            measure_latency_ms(model, input_size, batch_size) for batch_size in LATENCY_BATCH_SIZES
        )


def _last_eval(history: list[dict[str, Any]]) -> dict[str, Any]:
    return next((h for h in reversed(history) if "eval_top1" in h), {})


def _num_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _first(value: str | list[str] | None) -> str | None:
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value
