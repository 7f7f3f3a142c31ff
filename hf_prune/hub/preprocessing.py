"""The preprocessing a slim model was trained with, in the formats ``pipeline`` and timm read back.

* timm models: the data config lives in ``config.json``'s ``pretrained_cfg`` (as on timm's Hub
  repos), and transformers' ``TimmWrapperImageProcessor`` builds timm's own eval transform from it.
* transformers models: a ``BitImageProcessor`` in ``preprocessor_config.json`` (resize the shorter
  side to ``size / crop_pct``, center-crop, rescale, normalize), loadable without hf_prune.

Both reproduce :func:`hf_prune.data.build_transform` with ``train=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from PIL import Image
from transformers import BitImageProcessor, TimmWrapperImageProcessor
from transformers.image_processing_utils import BaseImageProcessor

from .trust import TIMM_DATA_FIELDS

if TYPE_CHECKING:  # hf_prune.models imports hf_prune.hub
    from hf_prune.models import ImageDataConfig

PREPROCESSOR_NAME = "preprocessor_config.json"
# pretrained_cfg fields that describe the slim architecture itself; everything else (hf_hub_id,
# url, license, paper ids, the dense model's input size and statistics) describes another model.
TIMM_ARCHITECTURE_FIELDS = ("num_classes", "first_conv", "classifier", "fixed_input_size")
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def image_processor_for(data_config: ImageDataConfig, library: str) -> BaseImageProcessor:
    """The image processor that applies ``data_config``'s eval transform, for a ``library`` model.

    Pass it as ``PruningTrainer(processing_class=...)``: the saved model then carries it.

    Raises:
        ValueError: an interpolation the processors cannot express, or a library other than
            ``"timm"`` / ``"transformers"``.
    """
    if data_config.interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation {data_config.interpolation!r} is not one of {sorted(_RESAMPLE)}")
    channels, height, width = data_config.input_size
    if library == "timm":
        return TimmWrapperImageProcessor(pretrained_cfg={
            "input_size": [channels, height, width], "mean": list(data_config.mean), "std": list(data_config.std),
            "interpolation": data_config.interpolation, "crop_pct": data_config.crop_pct, "crop_mode": "center",
        })
    if library != "transformers":
        raise ValueError(f"unknown model library {library!r}: expected 'timm' or 'transformers'")
    resized = (int(height / data_config.crop_pct), int(width / data_config.crop_pct))
    return BitImageProcessor(
        size={"shortest_edge": resized[0]} if height == width else {"height": resized[0], "width": resized[1]},
        resample=_RESAMPLE[data_config.interpolation],
        crop_size={"height": height, "width": width},
        image_mean=list(data_config.mean),
        image_std=list(data_config.std),
        do_convert_rgb=channels == 3,
    )


def processor_input_size(processor: BaseImageProcessor | None) -> list[int] | None:
    """The (channels, height, width) a timm processor produces; ``None`` for others (their config states it)."""
    return list(processor.data_config["input_size"]) if isinstance(processor, TimmWrapperImageProcessor) else None


def timm_pretrained_cfg(saved: Mapping[str, Any] | None, processor: BaseImageProcessor | None,
                        input_size: list[int], num_classes: int | None) -> dict[str, Any]:
    """The ``pretrained_cfg`` of a slim timm model: its own input size, classes and preprocessing.

    The dense model's fields that name the slim model's architecture are kept; its Hub id, URL,
    license and the like are dropped. ``processor`` (a ``TimmWrapperImageProcessor``) gives the
    normalization; without one the dense model's is kept and only the input size is corrected.

    Raises:
        TypeError: ``processor`` is not a ``TimmWrapperImageProcessor``.
    """
    saved = dict(saved or {})
    config = {key: saved[key] for key in (*TIMM_ARCHITECTURE_FIELDS, *TIMM_DATA_FIELDS) if key in saved}
    if processor is not None:
        if not isinstance(processor, TimmWrapperImageProcessor):
            raise TypeError(
                f"a timm model is saved with a TimmWrapperImageProcessor (see image_processor_for), got {type(processor).__name__}"
            )
        config.update({key: _plain(processor.data_config[key]) for key in TIMM_DATA_FIELDS if key in processor.data_config})
    config["input_size"] = list(input_size)
    if num_classes is not None:
        config["num_classes"] = num_classes
    return config


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
