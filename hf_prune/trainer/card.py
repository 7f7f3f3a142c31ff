"""A run's model card and plots, from a plain record of the run (never the trainer itself).

As TRL's ``generate_model_card(...)`` takes values, :func:`card_figures` and :func:`render_card`
take a :class:`RunFacts` that the trainer fills in at save time.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from huggingface_hub import get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn
from transformers import TrainingArguments
from transformers.utils import logging

from hf_prune.hub import ModelSource
from hf_prune.hub.model_card import ModelCardInputs, ModelMeasurements, render_model_card
from hf_prune.hub.pretrained import uniform_source
from hf_prune.latency import measure_latency_ms
from hf_prune.plots import plot_layer_widths, plot_panels
from hf_prune.trainer.pruning_state import PruningRecord

CURVES_PLOT_NAME = "training_curves.png"
WIDTHS_PLOT_NAME = "pruned_widths.png"
LATENCY_BATCH_SIZES = (1, 64)
_REDACTED = "<redacted>"
# Filled in by TrainingArguments.__post_init__ or by the trainer, not chosen by the user.
_DERIVED = frozenset({"accelerator_config", "label_names", "logging_dir"})

logger = logging.get_logger(__name__)


@dataclass
class RunFacts:
    """What the card says about a run.

    Attributes:
        record: the pruning record (method, dense MACs, events).
        args: the run's ``PruningArguments``.
        log_history: the Trainer's ``state.log_history``.
        model: the trained (slim) model, unwrapped.
        source: how to build the dense architecture again.
        input_size: one input's shape, e.g. ``(3, 32, 32)``.
        macs: MACs per image of ``model``.
        widths: ``{group: (units before the first prune, units now, kind)}`` of every group in model
            order (empty before the first prune).
        method_figures: ``(title, file name)`` of the plots the method wrote into ``args.output_dir``.
        latency: ``PruningTrainer.latency_summary()`` (predicted vs measured latency), if tracked.
    """

    record: PruningRecord
    args: TrainingArguments
    log_history: list[dict[str, Any]]
    model: nn.Module
    source: ModelSource
    input_size: tuple[int, ...]
    macs: int | None
    widths: dict[str, tuple[int, int, str]]
    method_figures: Sequence[tuple[str, str]] = ()
    latency: dict[str, Any] | None = None


def write_widths_plot(widths: dict[str, tuple[int, int, str]], method: str, directory: str) -> str | None:
    """``pruned_widths.png`` in ``directory``: original vs kept units of every group; its path."""
    if not widths:
        logger.warning(f"{WIDTHS_PLOT_NAME} not written: nothing was pruned in this run (method {method}).")
        return None
    title = f"{method}: kept units per group, in model order"
    return plot_layer_widths(widths, os.path.join(directory, WIDTHS_PLOT_NAME), title=title)


def card_figures(facts: RunFacts, scratch: str) -> dict[str, str]:
    """The card's plots: per-layer widths, training curves, the method's own; ``{file name: path}``."""
    figures = {}
    for name, path in ((WIDTHS_PLOT_NAME, write_widths_plot(facts.widths, facts.record.method, scratch)),
                       (CURVES_PLOT_NAME, plot_training_curves(facts, os.path.join(scratch, CURVES_PLOT_NAME)))):
        if path:
            figures[name] = path
    for _, name in facts.method_figures:
        path = os.path.join(facts.args.output_dir, name)
        if os.path.isfile(path):
            figures[name] = path
    return figures


def render_card(facts: RunFacts, figures: Sequence[str], repo_id: str, card_kwargs: dict[str, Any]) -> str:
    """The model card (markdown with metadata) for the plots ``figures`` (file names)."""
    titles = {CURVES_PLOT_NAME: "Training curves", **{name: title for title, name in facts.method_figures}}
    inputs = card_inputs(facts, repo_id, card_kwargs, [(titles[n], n) for n in figures if n in titles])
    inputs.widths_plot = WIDTHS_PLOT_NAME if WIDTHS_PLOT_NAME in figures else None
    inputs.vanilla_loadable = uniform_source(facts.model, facts.source) is not facts.source
    return render_model_card(inputs)


def card_inputs(facts: RunFacts, repo_id: str, card_kwargs: dict[str, Any], figures: list[tuple[str, str]]) -> ModelCardInputs:
    """The card of the run now, with ``card_kwargs`` from ``create_model_card``."""
    events, args = facts.record.events, facts.args
    dense_metrics = (events[0].get("metrics_before") or {}) if events else {}
    final_metrics = _last_eval(facts.log_history)
    params = _num_params(facts.model)
    with_top5 = _num_classes(facts.model) > 5  # with 5 classes or fewer, top-5 is always 100 %
    dense = ModelMeasurements(
        f"dense, trained {events[0]['epoch'] or 0:.2f} epochs (checkpoint that was pruned; not a trained dense reference)"
        if dense_metrics else "dense",
        top1=dense_metrics.get("eval_before_prune_top1"),
        top5=dense_metrics.get("eval_before_prune_top5") if with_top5 else None,
        macs=facts.record.dense_macs,
        params=facts.record.dense_params or params,
    )
    pruned = ModelMeasurements(
        "pruned (end of training)",
        top1=final_metrics.get("eval_top1"),
        top5=final_metrics.get("eval_top5") if with_top5 else None,
        macs=facts.macs,
        params=params,
    )
    reference = dense_reference(card_kwargs.get("dense_reference"), dense, with_top5)
    if args.card_latency:
        _measure_latency(facts, dense, pruned)
    tags = card_kwargs.get("tags") or []
    return ModelCardInputs(
        model_name=card_kwargs.get("model_name") or os.path.basename(os.path.abspath(args.output_dir)),
        repo_id=repo_id,
        source=facts.source,
        method=facts.record.method,
        target=args.target_flops_reduction,
        dense=dense,
        pruned=pruned,
        dense_reference=reference,
        latency=facts.latency,
        events=events,
        arguments=non_default_arguments(args),
        command=_command_line(args),
        figures=figures,
        base_model=hub_model_id(card_kwargs.get("finetuned_from")),
        dataset_id=_first(card_kwargs.get("dataset_tags")),
        dataset_name=_first(card_kwargs.get("dataset")),
        license=card_kwargs.get("license"),
        tags=[tags] if isinstance(tags, str) else list(tags),
    )


def dense_reference(given: dict[str, Any] | str | None, dense: ModelMeasurements, with_top5: bool) -> ModelMeasurements | None:
    """The card row of a trained dense model: ``{"top1": ..., "top5": ...}`` (fractions) or the path of
    a dense run's metrics JSON (the Trainer's ``eval_results.json`` / ``all_results.json``).

    Raises:
        ValueError: the file is missing or holds no ``top1`` / ``eval_top1``.
    """
    if given is None:
        return None
    metrics = given
    if isinstance(given, str | os.PathLike):
        try:
            with open(given, encoding="utf-8") as f:
                metrics = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"dense_reference {given!r} is not a readable metrics JSON ({err})") from err
    top1 = metrics.get("top1", metrics.get("eval_top1")) if isinstance(metrics, dict) else None
    if top1 is None:
        raise ValueError(f"dense_reference {given!r} has no 'top1' or 'eval_top1': pass a dense run's eval_results.json")
    top5 = metrics.get("top5", metrics.get("eval_top5")) if with_top5 else None
    label = metrics.get("label", "dense reference (trained without pruning)")
    return ModelMeasurements(label, top1=top1, top5=top5, macs=dense.macs, params=dense.params)


def hub_model_id(name: str | None) -> str | None:
    """``name`` when it is a Hub model id (``owner/name``, not a local path), else ``None``."""
    name = (name or "").removeprefix("hf-hub:")
    if name.count("/") != 1 or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def plot_training_curves(facts: RunFacts, path: str) -> str | None:
    """Losses and eval top-1 over the optimizer step, one panel each, prune events marked; ``None`` without logs.

    A run shorter than ``logging_steps`` logs no periodic loss: its mean training loss (logged at the
    end as ``train_loss``) stands in, drawn at the last step.
    """
    def series(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(h["step"], scale * h[key]) for h in facts.log_history if key in h and "step" in h]

    training = {"training loss": series("loss")} if series("loss") else {"training loss (run mean)": series("train_loss")}
    panels = {
        "loss": {**training, "eval loss": series("eval_loss")},
        "eval top-1 (%)": {"eval top-1": series("eval_top1", 100)},
    }
    if not any(points for curves in panels.values() for points in curves.values()):
        logger.warning(f"{CURVES_PLOT_NAME} not written: the run logged no loss and no evaluation.")
        return None
    events = [event["global_step"] for event in facts.record.events]
    return plot_panels(panels, path, xlabel="optimizer step", title="Training", events=events, event_label="prune")


def redact_secrets(argv: Sequence[str], secrets: Sequence[str | None] = ()) -> list[str]:
    """``argv`` with the value of every ``--*token`` option and every known secret value replaced.

    Handles ``--hub_token VALUE`` and ``--hub_token=VALUE``; ``secrets`` (e.g. the token in use)
    are also replaced wherever they appear, so a token passed any other way is not published.
    """
    secrets = [s for s in secrets if s]
    redacted, hide_next = [], False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        if hide_next:
            arg, hide_next = _REDACTED, False
        elif flag.startswith("-") and flag.lower().endswith("token"):
            arg, hide_next = (f"{flag}={_REDACTED}", False) if eq else (arg, True)
        for secret in secrets:
            arg = arg.replace(secret, _REDACTED)
        redacted.append(arg)
    return redacted


def _command_line(args: TrainingArguments) -> str | None:
    if not sys.argv or not sys.argv[0]:
        return None
    secrets = [args.hub_token, get_token(), *(os.environ.get(n) for n in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))]
    return shlex.join(redact_secrets([os.path.basename(sys.argv[0]), *sys.argv[1:]], secrets))


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


def _measure_latency(facts: RunFacts, dense: ModelMeasurements, pruned: ModelMeasurements) -> None:
    slim = copy.deepcopy(facts.model).cpu().float()
    dense_model = facts.source.build("cpu")
    for row, model in ((dense, dense_model), (pruned, slim)):
        row.latency_ms_bs1, row.latency_ms_bs64 = (
            measure_latency_ms(model, facts.input_size, batch_size) for batch_size in LATENCY_BATCH_SIZES
        )


def _last_eval(history: list[dict[str, Any]]) -> dict[str, Any]:
    return next((h for h in reversed(history) if "eval_top1" in h), {})


def _num_classes(model: Any) -> int:
    config = getattr(model, "config", None)
    return getattr(model, "num_classes", None) or getattr(config, "num_labels", 0)


def _num_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _first(value: str | list[str] | None) -> str | None:
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value
