"""``ModelSource``: how to rebuild the dense architecture a slim model was pruned from.

A slim model is stored as its source architecture (a timm name + ``create_model`` kwargs, or a
transformers config) plus a shape spec. Building the source needs no weights and no network,
and on the meta device no memory either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import transformers
from torch import nn
from transformers import CONFIG_MAPPING, AutoModelForImageClassification, PreTrainedModel

LIBRARIES = ("timm", "transformers")
# timm.create_model arguments that load files or weights: a config.json must never steer them.
_TIMM_LOADING_ARGS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"})


@dataclass(frozen=True)
class ModelSource:
    """The dense architecture of a model, as data.

    Attributes:
        library: ``"timm"`` or ``"transformers"``.
        architecture: timm model name, or the transformers model class (e.g.
            ``ViTForImageClassification``).
        model_args: timm: kwargs of ``timm.create_model``; transformers: the config as a dict.
        pretrained_cfg: timm's pretrained config (input size, normalization), kept for
            ``timm.create_model("local-dir:...")``.
    """

    library: str
    architecture: str
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise ValueError(f"unknown model library {self.library!r}: expected one of {LIBRARIES}")
        loading = sorted(_TIMM_LOADING_ARGS & set(self.model_args)) if self.library == "timm" else []
        if loading:
            raise ValueError(
                f"model args {loading} would make timm load files or weights; a slim model's architecture "
                "is rebuilt without them (its weights come from model.safetensors)"
            )
        try:
            json.dumps(self.model_args)
        except TypeError as err:
            raise ValueError(
                f"the model args of {self.architecture!r} are not JSON ({err}); a slim model is stored "
                "without pickles, so build the model from JSON-able arguments"
            ) from err

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelSource | None:
        """Describe a freshly built timm or transformers model; ``None`` for any other module."""
        if isinstance(model, PreTrainedModel):
            config = model.config.to_dict()
            config["architectures"] = [type(model).__name__]
            return cls("transformers", type(model).__name__, config)
        pretrained_cfg = getattr(model, "pretrained_cfg", None)
        if isinstance(pretrained_cfg, dict) and pretrained_cfg.get("architecture"):
            model_args = dict(getattr(model, "_model_args", None) or {"num_classes": model.num_classes})
            return cls("timm", pretrained_cfg["architecture"], model_args, json.loads(json.dumps(pretrained_cfg)))
        return None

    def build(self, device: str | torch.device = "meta") -> nn.Module:
        """Build the dense architecture with random (or, on ``meta``, no) weights."""
        with torch.device(device):
            if self.library == "timm":
                return timm.create_model(self.architecture, pretrained=False, **self.model_args)
            config = self.transformers_config()
            model_class = getattr(transformers, self.architecture, None)
            if isinstance(model_class, type) and issubclass(model_class, PreTrainedModel):
                return model_class(config)
            return AutoModelForImageClassification.from_config(config)

    def transformers_config(self) -> transformers.PretrainedConfig:
        """The transformers config of the dense architecture."""
        model_type = self.model_args.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"config model_type {model_type!r} is not known to transformers {transformers.__version__}")
        return CONFIG_MAPPING[model_type].from_dict(self.model_args)

    def to_config(self) -> dict[str, Any]:
        """The ``config.json`` content that describes the source in its library's own format."""
        if self.library == "transformers":
            return dict(self.model_args)
        return {
            "architecture": self.architecture,
            "num_classes": self.model_args.get("num_classes"),
            "model_args": self.model_args,
            "pretrained_cfg": self.pretrained_cfg or {},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelSource:
        """Inverse of :meth:`to_config` (the library is taken from the ``hf_prune`` section)."""
        library = config.get("hf_prune", {}).get("library")
        if library == "timm":
            return cls("timm", config["architecture"], config.get("model_args") or {}, config.get("pretrained_cfg"))
        if library == "transformers":
            model_args = {k: v for k, v in config.items() if k != "hf_prune"}
            architecture = (model_args.get("architectures") or ["AutoModelForImageClassification"])[0]
            return cls("transformers", architecture, model_args)
        raise ValueError(f"config.json names the model library {library!r}: expected one of {LIBRARIES}")
