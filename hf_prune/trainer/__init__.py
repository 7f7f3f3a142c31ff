"""The Trainer integration: ``PruningArguments`` and ``PruningTrainer``.

``pruning_trainer`` drives the method from the Trainer's loop; ``rewiring`` rebuilds optimizer,
scheduler and wrappers after a prune; ``pruning_state`` saves and loads what a run records
besides its weights; ``card`` turns a plain record of the run into the model card.
"""

from hf_prune.trainer.pruning_config import PruningArguments
from hf_prune.trainer.pruning_trainer import PruningTrainer

__all__ = ["PruningArguments", "PruningTrainer"]
