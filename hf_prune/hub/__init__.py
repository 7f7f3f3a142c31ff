"""Hub I/O: slim models as safetensors + config.json + model card, loaded without pickles."""

from .pretrained import AutoPrunedModel, PrunedModelError, save_pretrained
from .source import ModelSource

__all__ = ["AutoPrunedModel", "ModelSource", "PrunedModelError", "save_pretrained"]
