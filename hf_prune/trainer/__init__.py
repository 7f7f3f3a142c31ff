"""The Trainer integration: ``PruningArguments`` and ``PruningTrainer``."""

from hf_prune.trainer.pruning_config import PruningArguments
from hf_prune.trainer.pruning_trainer import PruningTrainer

__all__ = ["PruningArguments", "PruningTrainer"]
