"""What a pruning run records beyond its weights; written and read back side by side.

A :class:`PruningRecord` is a plain snapshot the trainer builds from its state: the method and
its ``state_dict``, the dense model's MACs and the prune events. Checkpoints and final saves
write it (``pruning_state.json``) with the training arguments (``training_args.json``); a
resumed run reads it back. Its :meth:`~PruningRecord.summary` is the ``hf_prune`` section of
``config.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments
from transformers.utils import logging

from hf_prune.hub.model_dir import write_text_atomic

logger = logging.get_logger(__name__)

PRUNING_STATE_NAME = "pruning_state.json"
TRAINING_ARGS_NAME = "training_args.json"
_EVENT_SUMMARY_KEYS = ("global_step", "epoch", "reason", "macs_after", "params_after", "macs_reduction")
# The arguments, besides the method's own, that decide what is pruned and when.
_SHAPING_ARGUMENTS = ("target_flops_reduction", "target_latency_reduction", "layer_prune_limit", "round_to",
                      "latency_aware_ranking", "uniform_widths", "prune_epoch", "ignored_layers", "num_train_epochs",
                      "max_steps")


@dataclass
class PruningRecord:
    """A run's pruning facts at one moment.

    Attributes:
        method: the registered name of the pruning method.
        method_state: what the method's ``state_dict`` returned.
        dense_macs: MACs per image of the model before any prune (``None`` before training).
        events: one dict per prune (what ``PruningTrainer.apply_pruning_plan`` returned).
        run: what makes a resumed run the same run (:func:`run_identity`).
        width_multiples: per group, the multiple its kept units are rounded to (``round_to``,
            fixed on the dense model; empty before training).
    """

    method: str
    method_state: dict[str, Any] = field(default_factory=dict)
    dense_macs: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    width_multiples: dict[str, int] = field(default_factory=dict)

    def save(self, directory: str, args: TrainingArguments) -> None:
        """Write ``pruning_state.json`` and ``training_args.json`` into ``directory`` (each atomically)."""
        write_text_atomic(os.path.join(directory, TRAINING_ARGS_NAME), args.to_json_string())
        state = {"method": self.method, "method_state": self.method_state, "dense_macs": self.dense_macs,
                 "pruning_events": self.events, "run": self.run, "width_multiples": self.width_multiples}
        write_text_atomic(os.path.join(directory, PRUNING_STATE_NAME), json.dumps(state, indent=2))

    @classmethod
    def load(cls, checkpoint: str, run: dict[str, Any], allow_changes: bool = False) -> PruningRecord | None:
        """The record saved in ``checkpoint``, which must come from the same run as ``run`` describes.

        Args:
            run: :func:`run_identity` of the run that resumes.
            allow_changes: resume anyway (with a warning) when the checkpoint has no record or
                was written with other pruning settings, model or classes.

        Raises:
            ValueError: the checkpoint has no record, an unreadable one, or one of another run.
        """
        path = os.path.join(checkpoint, PRUNING_STATE_NAME)
        if not os.path.exists(path):
            _refuse(f"{checkpoint} has no {PRUNING_STATE_NAME}: the pruning method would start afresh and "
                    "the prune events already applied to this model would be lost", allow_changes)
            return None
        try:
            with open(path) as f:
                saved = json.load(f)
            record = cls(saved["method"], saved["method_state"], saved["dense_macs"], saved["pruning_events"],
                         saved.get("run", {}), saved.get("width_multiples", {}))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is truncated or malformed ({type(error).__name__}: {error}): resume from an earlier "
                "checkpoint, or start over"
            ) from None
        if record.method != run["method"]:
            raise ValueError(
                f"{checkpoint} was written by pruning_method='{record.method}', but this run uses "
                f"'{run['method']}': resume with the same method"
            )
        changed = {k: (record.run.get(k), v) for k, v in run.items() if record.run.get(k) != v}
        if changed:
            listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in changed.items())
            _refuse(f"{checkpoint} was written by a different run ({listed}): resume with the same settings",
                    allow_changes)
        return record

    @property
    def dense_params(self) -> int | None:
        """Parameters of the model before the first prune (``None`` if it was never pruned)."""
        return self.events[0]["params_before"] if self.events else None

    def summary(self, target: float, input_size: list[int], macs: int | None, params: int) -> dict[str, Any]:
        """The ``hf_prune`` section of ``config.json``: method, target, costs dense and now, events."""
        return {
            "method": self.method,
            "target_flops_reduction": target,
            "input_size": input_size,
            "macs_dense": self.dense_macs,
            "macs": macs,
            "params_dense": self.dense_params or params,
            "params": params,
            "pruning_events": [{key: event[key] for key in _EVENT_SUMMARY_KEYS} for event in self.events],
        }


def run_identity(args: TrainingArguments, method: Any, model_identity: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint.

    The method, the arguments that decide what is pruned and when (the shared ones and the
    method's own), and the model's architecture and number of classes (``model_identity``).
    """
    own = [f.name for f in fields(method.arguments)] if method.arguments is not None else []
    shaping = {name: _jsonable(getattr(args, name)) for name in (*_SHAPING_ARGUMENTS, *own)}
    return {"method": method.name, **shaping, **model_identity}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _refuse(message: str, allow_changes: bool) -> None:
    if not allow_changes:
        raise ValueError(f"{message}, or pass resume_with_changed_pruning=True (--resume_with_changed_pruning) to "
                         "resume anyway")
    logger.warning(f"{message}; resuming anyway (resume_with_changed_pruning)")
