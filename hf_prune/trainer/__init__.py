"""The Trainer integration: ``PruningArguments`` and ``PruningTrainer``.

``pruning_trainer`` drives the method from the Trainer's loop; ``rewiring`` rebuilds optimizer,
scheduler and wrappers after a prune; ``pruning_state`` saves and loads what a run records
besides its weights; ``card`` turns a plain record of the run into the model card.
``PruningArguments`` alone (e.g. for ``--help``) does not import the Trainer.
"""

from hf_prune._lazy import lazy_getattr

_EXPORTS = {"PruningArguments": "pruning_config", "PruningTrainer": "pruning_trainer"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
