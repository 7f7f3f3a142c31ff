"""hf_prune: structured pruning while training, inside the Hugging Face Trainer.

Importing the package registers the CIFAR models (``cifar_resnet20/32/56/110``, ``cifar_vgg16``)
in timm's registry.
"""

from hf_prune import models  # noqa: F401  (registers the CIFAR models in timm)
from hf_prune.hub import AutoPrunedModel, ModelSource, save_pretrained
from hf_prune.methods import (
    PruningContext,
    PruningMethod,
    PruningPlan,
    create_method,
    list_methods,
    register_criterion,
    register_method,
)
from hf_prune.structure import (
    MacsModel,
    StructureGraph,
    apply_shape_spec,
    count_macs_params,
    export_shape_spec,
)
from hf_prune.trainer import PruningArguments, PruningTrainer

__version__ = "0.1.0"

__all__ = [
    "AutoPrunedModel",
    "MacsModel",
    "ModelSource",
    "PruningArguments",
    "PruningContext",
    "PruningMethod",
    "PruningPlan",
    "PruningTrainer",
    "StructureGraph",
    "apply_shape_spec",
    "count_macs_params",
    "create_method",
    "export_shape_spec",
    "list_methods",
    "register_criterion",
    "register_method",
    "save_pretrained",
]
