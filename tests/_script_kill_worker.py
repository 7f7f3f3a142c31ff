"""The CLI script, SIGKILLed at its first checkpoint saved while OCSP is searching (before its prune).

Runs ``scripts/prune_image_classification.py``'s ``main`` with its command line, plus one callback.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

import hf_prune.trainer.pruning_trainer as pruning_trainer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"


class _KillMidSearch(TrainerCallback):
    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if not self.trainer.pruning_events and self.trainer.pruning_method.search.checks > 0:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    original_init = pruning_trainer.PruningTrainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(_KillMidSearch(self))

    pruning_trainer.PruningTrainer.__init__ = init
    runpy.run_path(str(SCRIPT))["main"](sys.argv[1:])


if __name__ == "__main__":
    main()
