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
import timm.data
import torch
import transformers
from torch import nn
from transformers import CONFIG_MAPPING, AutoModelForImageClassification, PreTrainedModel

from .trust import DESCRIPTIVE_FIELDS, check_timm_source, check_transformers_config, timm_data_fields

LIBRARIES = ("timm", "transformers")
# config.json of a slim model that no architecture config can describe: loaded by hf_prune's
# registered Auto classes; a transformers source config is nested under SOURCE_CONFIG_KEY.
MODEL_TYPE = "hf_prune"
SOURCE_CONFIG_KEY = "source_config"


@dataclass(frozen=True)
class ModelSource:
    """The dense architecture of a model, as data.

    Attributes:
        library: ``"timm"`` or ``"transformers"``.
        architecture: timm model name, or the transformers model class (e.g.
            ``ViTForImageClassification``).
        model_args: timm: kwargs of ``timm.create_model``; transformers: the config as a dict.
            Both pass the allow-list of :mod:`hf_prune.hub.trust` (registry architectures, sizes
            and plain names only), whether they come from a model or from a ``config.json``.
        pretrained_cfg: timm's pretrained config (input size, normalization), written for
            ``timm.create_model("local-dir:...")``; read back, only its input fields are kept.
    """

    library: str
    architecture: str
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise ValueError(f"unknown model library {self.library!r}: expected one of {LIBRARIES}")
        if self.library == "timm":
            check_timm_source(self.architecture, self.model_args)
        else:
            object.__setattr__(self, "model_args", check_transformers_config(self.model_args))
            if self.architecture not in self.model_args.get("architectures", [self.architecture]):
                architectures = self.model_args["architectures"]
                raise ValueError(f"architecture {self.architecture!r} differs from the config's {architectures}")
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
            config = {k: v for k, v in model.config.to_dict().items() if k not in DESCRIPTIVE_FIELDS}
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

    def input_size(self) -> list[int]:
        """(channels, height, width) of the inputs the dense architecture is built for."""
        if self.library == "timm":
            channels, *size = timm.data.resolve_data_config({}, model=self.build("meta"))["input_size"]
            size = self.model_args.get("img_size", size)
            channels = self.model_args.get("in_chans", channels)
        else:
            sizes = self.model_args.get("vision_config") or self.model_args  # a composite config (CLIP) nests them
            size = sizes.get("image_size", 224)
            channels = sizes.get("num_channels", 3)
        height, width = (size, size) if isinstance(size, int) else size
        return [channels, height, width]

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
        """Inverse of :meth:`to_config` (the library is taken from the ``hf_prune`` section).

        Raises:
            ValueError: the config fails the allow-list of :mod:`hf_prune.hub.trust`.
        """
        library = config.get("hf_prune", {}).get("library")
        if library == "timm":
            model_args = config.get("model_args") or {}
            return cls("timm", config.get("architecture"), model_args, timm_data_fields(config.get("pretrained_cfg")))
        if library == "transformers":
            if config.get("model_type") == MODEL_TYPE:
                config = config.get(SOURCE_CONFIG_KEY)
                if not isinstance(config, dict):
                    raise ValueError(f"'{SOURCE_CONFIG_KEY}' is {type(config).__name__}: expected the dense model's config")
            model_args = check_transformers_config({k: v for k, v in config.items() if k != "hf_prune"})
            return cls("transformers", model_args["architectures"][0], model_args)
        raise ValueError(f"config.json names the model library {library!r}: expected one of {LIBRARIES}")
