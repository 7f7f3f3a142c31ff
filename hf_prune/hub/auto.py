"""Slim models through transformers' own entry points: ``AutoModelForImageClassification``, ``pipeline``.

Importing hf_prune registers :class:`PrunedConfig` (``model_type: "hf_prune"``, the type
``save_pretrained`` writes when no architecture config can state the slim widths) and
:class:`PrunedModelForImageClassification` with transformers' Auto classes. Loading goes through
:meth:`AutoPrunedModel.load`: the same allow-list, meta build and strict safetensors load; no
``trust_remote_code``, no pickles. Slim transformers models with uniform widths keep their own
``model_type`` and load with vanilla transformers.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from hf_prune.models.forward import logits_of

from .pretrained import AutoPrunedModel, save_pretrained
from .source import MODEL_TYPE

_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")
# Passed by transformers' Auto classes and pipeline; they choose nothing about the model.
_FRAMEWORK_KWARGS = frozenset({"trust_remote_code", "use_safetensors", "adapter_kwargs", "code_revision"})
# Config fields transformers fills from where it loaded and the loading arguments: no part of the model.
# Download settings transformers (>= 5.25) forwards with their defaults: accepted only when unset or empty.
_UNSET_ONLY_KWARGS = ("proxies", "subfolder")
_LOADING_CONFIG_FIELDS = frozenset({"_name_or_path", "dtype", "torch_dtype"})


class PrunedConfig(PretrainedConfig):
    """``config.json`` of a slim model: the dense source, the shape spec (``hf_prune``) and class names.

    timm models keep timm's fields (``architecture``, ``model_args``, ``pretrained_cfg``: the input
    size and normalization used in training); transformers models keep the dense config under
    ``source_config`` and their per-layer widths under ``layer_widths``.
    """

    model_type = MODEL_TYPE

    @property
    def image_processor_type(self) -> str | None:
        """timm models are preprocessed by ``TimmWrapperImageProcessor`` from ``pretrained_cfg``."""
        return "TimmWrapperImageProcessor" if "pretrained_cfg" in self.__dict__ else None


class PrunedModelForImageClassification(PreTrainedModel):
    """A slim timm or transformers classifier (``self.slim``) behind transformers' model interface.

    ``forward(pixel_values, labels=None)`` returns an ``ImageClassifierOutput``;
    :meth:`save_pretrained` writes a directory that loads again.
    """

    config_class = PrunedConfig
    base_model_prefix = "slim"
    main_input_name = "pixel_values"

    def __init__(self, config: PrunedConfig, slim: nn.Module | None = None) -> None:
        super().__init__(config)
        if slim is None:
            raise ValueError(
                "a PrunedModelForImageClassification wraps a loaded slim model: use "
                "AutoModelForImageClassification.from_pretrained(directory_or_repo_id)"
            )
        self.slim = slim
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any,
                        config: PretrainedConfig | None = None, **kwargs: Any) -> PrunedModelForImageClassification:
        """Load with :meth:`AutoPrunedModel.load` (``config`` is read again from the directory by it).

        Accepts the Hub arguments ``revision``, ``token``, ``cache_dir``, ``local_files_only``,
        ``force_download``, and ``device_map`` /
        ``dtype`` (a device and a torch dtype).

        Raises:
            PrunedModelError: as :meth:`AutoPrunedModel.from_pretrained`.
            TypeError: an argument that would change the model (e.g. ``num_labels``, ``drop_rate``).
        """
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        for key in _UNSET_ONLY_KWARGS:
            if not kwargs.get(key):
                kwargs.pop(key, None)
        device = kwargs.pop("device_map", None) or "cpu"
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        unknown = sorted(k for k in kwargs if not k.startswith("_") and k not in _FRAMEWORK_KWARGS)
        if model_args or unknown or not isinstance(device, str | torch.device):
            raise TypeError(
                f"hf_prune models load exactly as saved: the arguments {unknown or model_args or ['device_map']} "
                "are not supported (pass revision, token, cache_dir, a device_map device or a dtype)"
            )
        slim, saved_config = AutoPrunedModel.load(pretrained_model_name_or_path, device=device, **hub_kwargs)
        saved = PrunedConfig.from_dict(saved_config)
        _refuse_changed_config(config, saved)
        model = cls(saved, slim=slim).eval()
        if dtype in (None, "auto"):
            return model  # as saved
        return model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)

    def init_weights(self) -> None:
        """Nothing to initialize or tie: the wrapped model holds the weights it was loaded with."""

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **_: Any) -> ImageClassifierOutput:
        """Logits of the slim model; with ``labels``, the cross-entropy loss too."""
        logits = logits_of(self.slim(pixel_values))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:  # noqa: D417
        """Save with :func:`hf_prune.save_pretrained` (the source, classes and preprocessing it was loaded with)."""
        save_pretrained(self, save_directory, pruning=_pruning_facts(self.config))


def _refuse_changed_config(given: PretrainedConfig | None, saved: PrunedConfig) -> None:
    """Config overrides (``from_pretrained(..., num_labels=3)`` edits the config before it gets here) are refused."""
    if given is None:
        return
    given_fields, saved_fields = given.to_dict(), saved.to_dict()
    changed = sorted(key for key in given_fields.keys() | saved_fields.keys()
                     if key not in _LOADING_CONFIG_FIELDS and given_fields.get(key) != saved_fields.get(key))
    if changed:
        raise TypeError(
            f"hf_prune models load exactly as saved: the config fields {changed} differ from the saved config.json "
            "(a slim model's classes and widths are fixed; fine-tune the loaded model to change them)"
        )


def _pruning_facts(config: PretrainedConfig) -> dict[str, Any]:
    """The ``hf_prune`` section of the loaded config, less what the save recomputes."""
    return {key: value for key, value in config.hf_prune.items() if key not in ("format_version", "library", "shape_spec")}


def register() -> None:
    """Register the ``hf_prune`` model type with transformers' Auto classes (idempotent)."""
    AutoConfig.register(MODEL_TYPE, PrunedConfig, exist_ok=True)
    AutoModelForImageClassification.register(PrunedConfig, PrunedModelForImageClassification, exist_ok=True)
