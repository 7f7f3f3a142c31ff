"""A training process for the SIGKILL test: ``kill`` dies right after the first post-prune
checkpoint, ``resume`` continues from the last checkpoint, ``full`` runs without interruption.
Each finishing run saves the model and a summary to ``<output_dir>/final``."""

from __future__ import annotations

import json
import os
import signal
import sys

from transformers import TrainerCallback

from conftest import toy_trainer  # this file runs as a program from tests/


class _KillAfterPrunedCheckpoint(TrainerCallback):
    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if self.trainer.pruning_events:
            os.kill(os.getpid(), signal.SIGKILL)


def main(mode: str, output_dir: str) -> None:
    trainer = toy_trainer(output_dir, pruning_method="magnitude", max_steps=8, save_strategy="steps", save_steps=3,
                          card_latency=False, full_determinism=True)
    if mode == "kill":
        trainer.add_callback(_KillAfterPrunedCheckpoint(trainer))
    trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
    final = os.path.join(output_dir, "final")
    trainer.save_model(final)
    summary = {"global_step": trainer.state.global_step, "prune_steps": [e["global_step"] for e in trainer.pruning_events]}
    with open(os.path.join(final, "summary.json"), "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
