"""Model cards for slim models: ``huggingface_hub.ModelCard`` rendered from ``model_cards/``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .source import ModelSource

TEMPLATE_NAME = "hf_prune_model_card.md"


@dataclass
class ModelMeasurements:
    """One row of the card's results table; ``None`` where not measured."""

    label: str
    top1: float | None = None
    top5: float | None = None
    macs: int | None = None
    params: int | None = None
    latency_ms_bs1: float | None = None
    latency_ms_bs64: float | None = None


@dataclass
class ModelCardInputs:
    """What a slim model's card says.

    Attributes:
        model_name: title (usually the output directory or Hub repo name).
        repo_id: what ``from_pretrained`` is given in the card's snippet.
        source: the dense architecture.
        method: ``pruning_method``; ``target``: ``target_flops_reduction`` (``None`` under a latency target).
        dense, pruned: the before/after rows; dense_reference: a trained dense model's row, if known.
        latency: ``PruningTrainer.latency_summary()`` under a latency target or profile: predicted vs
            measured latency of the slim model.
        events: the trainer's pruning events.
        arguments: the training arguments worth showing (non-default ones).
        command: the command line that trained the model.
        figures: ``(title, file name)`` of extra plots in the model directory.
        widths_plot: file name of the per-layer widths plot.
        vanilla_loadable: the architecture's own config describes the slim model.
        base_model, dataset_id, dataset_name, license, tags: card metadata.
    """

    model_name: str
    repo_id: str
    source: ModelSource
    method: str
    target: float | None
    dense: ModelMeasurements
    pruned: ModelMeasurements
    dense_reference: ModelMeasurements | None = None
    latency: dict[str, Any] | None = None
    events: Sequence[dict[str, Any]] = ()
    arguments: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    figures: Sequence[tuple[str, str]] = ()
    widths_plot: str | None = "pruned_widths.png"
    vanilla_loadable: bool = False
    base_model: str | None = None
    dataset_id: str | None = None
    dataset_name: str | None = None
    license: str | None = None
    tags: Sequence[str] = ()


def render_model_card(inputs: ModelCardInputs, template_path: str | None = None) -> str:
    """The README.md text: YAML metadata (tags, base model, datasets, model-index) and the body."""
    card = ModelCard.from_template(
        _card_data(inputs),
        template_path=template_path or default_template_path(),
        model_name=inputs.model_name,
        repo_id=inputs.repo_id,
        base_model=inputs.base_model,
        architecture=inputs.source.architecture,
        method=inputs.method,
        dataset_name=inputs.dataset_name,
        target=None if inputs.target is None else f"{inputs.target:.0%}",
        macs_ratio=_percent(inputs.pruned.macs, inputs.dense.macs),
        macs_reduction=_percent(_difference(inputs.dense.macs, inputs.pruned.macs), inputs.dense.macs),
        results=[_formatted(row) for row in (inputs.dense_reference, inputs.dense, inputs.pruned) if row is not None],
        latency_note=_latency_note(inputs.dense, inputs.pruned),
        latency_target=_latency_target_note(inputs.latency),
        vanilla_loadable=inputs.vanilla_loadable,
        widths_plot=inputs.widths_plot,
        figures=list(inputs.figures),
        events=[_event_row(event) for event in inputs.events],
        kept_attention=sorted({name for event in inputs.events for name in event.get("kept_attention", ())}),
        command=inputs.command,
        arguments=json.dumps(inputs.arguments, indent=2, sort_keys=True, default=str),
    )
    return str(card)


def default_template_path() -> str:
    """The packaged copy of ``model_cards/hf_prune_model_card.md``."""
    return str(resources.files("hf_prune.hub").joinpath("model_cards", TEMPLATE_NAME))


def _card_data(inputs: ModelCardInputs) -> ModelCardData:
    tags = ["pruned", "structured-pruning", "hf_prune", inputs.method, "image-classification", *inputs.tags]
    eval_results = None
    dataset = inputs.dataset_id or inputs.dataset_name
    if dataset and inputs.pruned.top1 is not None:
        eval_results = [
            EvalResult(
                task_type="image-classification",
                dataset_type=dataset,
                dataset_name=inputs.dataset_name or inputs.dataset_id,
                metric_type=metric,
                metric_name=name,
                metric_value=round(100 * value, 2),
            )
            for metric, name, value in (
                ("accuracy", "top-1 accuracy", inputs.pruned.top1),
                ("top_5_accuracy", "top-5 accuracy", inputs.pruned.top5),
            )
            if value is not None
        ]
    return ModelCardData(
        library_name="transformers" if inputs.vanilla_loadable else "hf_prune",
        pipeline_tag="image-classification",
        license=inputs.license,
        base_model=inputs.base_model,
        datasets=[inputs.dataset_id] if inputs.dataset_id else None,
        tags=list(dict.fromkeys(tags)),
        model_name=inputs.model_name,
        eval_results=eval_results,
    )


def _formatted(row: ModelMeasurements) -> dict[str, str]:
    return {
        "label": row.label,
        "top1": _number(row.top1, 100),
        "top5": _number(row.top5, 100),
        "macs": _number(row.macs, 1e-6),
        "params": _number(row.params, 1e-6, digits=3),
        "latency_bs1": _number(row.latency_ms_bs1),
        "latency_bs64": _number(row.latency_ms_bs64),
    }


def _event_row(event: dict[str, Any]) -> dict[str, str]:
    return {
        "global_step": str(event.get("global_step")),
        "epoch": _number(event.get("epoch")),
        "reason": str(event.get("reason", "")).replace("|", "/"),
        "macs_after": _number(event.get("macs_after"), 1e-6),
        "params_after": _number(event.get("params_after"), 1e-6, digits=3),
        "reduction": _percent(event.get("macs_reduction"), 1.0),
    }


def _latency_note(dense: ModelMeasurements, pruned: ModelMeasurements) -> str:
    if not (dense.latency_ms_bs64 and pruned.latency_ms_bs64 and dense.macs and pruned.macs):
        return ""
    return (
        f"On CPU at batch 64 the slim model runs {dense.latency_ms_bs64 / pruned.latency_ms_bs64:.2f}x faster "
        f"for {dense.macs / pruned.macs:.2f}x fewer MACs (eval-mode forward, median of repeated runs, "
        f"{os.cpu_count()} cores machine)."
    )


def _latency_target_note(latency: dict[str, Any] | None) -> str:
    if latency is None:
        return ""
    target = latency["target_latency_reduction"]
    return (
        f"Latency on {latency['device']} ({latency['machine']}) at batch {latency['batch_size']}: dense "
        f"{_number(latency['dense_ms'])} ms; slim {_number(latency['predicted_ms'])} ms predicted by the latency "
        f"profile ({_percent(latency['predicted_reduction'], 1.0)} less), {_number(latency['measured_ms'])} ms "
        f"measured against {measured_against(latency)} ({_percent(latency['measured_reduction'], 1.0)} less)"
        + ("." if target is None else f"; target {target:.0%} less.")
    )


def measured_against(latency: dict[str, Any]) -> str:
    """What a latency summary's measured reduction compares with, in words: the dense architecture timed in
    turns with the slim model, or (without that timing) the profile's dense timing."""
    if latency["dense_timed_in_turns"]:
        return f"{_number(latency['measured_dense_ms'])} ms dense timed in turns with it"
    return f"the profile's {_number(latency['measured_dense_ms'])} ms dense"


def _number(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _percent(part: float | None, whole: float | None) -> str:
    return "n/a" if part is None or not whole else f"{part / whole:.1%}"


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
