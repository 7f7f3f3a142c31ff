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
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments
from transformers.utils import logging

logger = logging.get_logger(__name__)

PRUNING_STATE_NAME = "pruning_state.json"
TRAINING_ARGS_NAME = "training_args.json"
_EVENT_SUMMARY_KEYS = ("global_step", "epoch", "reason", "macs_after", "params_after", "macs_reduction")


@dataclass
class PruningRecord:
    """A run's pruning facts at one moment.

    Attributes:
        method: the registered name of the pruning method.
        method_state: what the method's ``state_dict`` returned.
        dense_macs: MACs per image of the model before any prune (``None`` before training).
        events: one dict per prune (what ``PruningTrainer.apply_pruning_plan`` returned).
    """

    method: str
    method_state: dict[str, Any] = field(default_factory=dict)
    dense_macs: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def save(self, directory: str, args: TrainingArguments) -> None:
        """Write ``pruning_state.json`` and ``training_args.json`` into ``directory`` (each atomically)."""
        _write_text_atomic(os.path.join(directory, TRAINING_ARGS_NAME), args.to_json_string())
        state = {"method": self.method, "method_state": self.method_state, "dense_macs": self.dense_macs,
                 "pruning_events": self.events}
        _write_text_atomic(os.path.join(directory, PRUNING_STATE_NAME), json.dumps(state, indent=2))

    @classmethod
    def load(cls, checkpoint: str, method: str) -> PruningRecord | None:
        """The record saved in ``checkpoint`` by a run of ``method``; ``None`` (with a warning) if absent.

        Raises:
            ValueError: the checkpoint was written by another pruning method.
        """
        path = os.path.join(checkpoint, PRUNING_STATE_NAME)
        if not os.path.exists(path):
            logger.warning(f"{checkpoint} has no {PRUNING_STATE_NAME}: the pruning method starts afresh")
            return None
        with open(path) as f:
            saved = json.load(f)
        if saved["method"] != method:
            raise ValueError(
                f"{checkpoint} was written by pruning_method='{saved['method']}', but this run uses "
                f"'{method}': resume with the same method"
            )
        return cls(saved["method"], saved["method_state"], saved["dense_macs"], saved["pruning_events"])

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


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
