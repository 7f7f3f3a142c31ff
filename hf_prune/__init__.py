"""hf_prune: structured pruning while training, inside the Hugging Face Trainer.

Importing the package registers the CIFAR models (``cifar_resnet20/32/56/110``, ``cifar_vgg16``)
in timm's registry and slim models with transformers' ``AutoModelForImageClassification`` and
``pipeline``. Everything else (the trainer, methods, ``hf_prune.data``, ``hf_prune.metrics``, ...)
is imported on first use.
"""

from hf_prune import hub  # noqa: F401  (registers slim models with transformers' Auto classes)
from hf_prune import models  # noqa: F401  (registers the CIFAR models in timm)
from hf_prune._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "AutoPrunedModel": "hub",
    "ModelSource": "hub",
    "save_pretrained": "hub",
    "PruningContext": "methods",
    "PruningMethod": "methods",
    "PruningPlan": "methods",
    "create_method": "methods",
    "list_methods": "methods",
    "register_criterion": "methods",
    "register_method": "methods",
    "MacsModel": "structure",
    "StructureGraph": "structure",
    "apply_shape_spec": "structure",
    "count_macs_params": "structure",
    "export_shape_spec": "structure",
    "PruningArguments": "trainer",
    "PruningTrainer": "trainer",
}
_SUBMODULES = ("data", "hub", "latency", "methods", "metrics", "plots", "structure", "trainer")

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS | {name: name for name in _SUBMODULES})
