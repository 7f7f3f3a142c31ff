"""Hub I/O: slim models as safetensors + config.json + model card, loaded without pickles.

Importing it registers slim models with transformers' ``AutoModelForImageClassification`` and
``pipeline`` (see :mod:`hf_prune.hub.auto`).
"""

from .auto import PrunedConfig, PrunedModelForImageClassification, register
from .preprocessing import image_processor_for
from .pretrained import AutoPrunedModel, PrunedModelError, save_pretrained
from .source import ModelSource

register()

__all__ = [
    "AutoPrunedModel",
    "ModelSource",
    "PrunedConfig",
    "PrunedModelError",
    "PrunedModelForImageClassification",
    "image_processor_for",
    "save_pretrained",
]
