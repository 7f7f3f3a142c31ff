"""Load an image classifier from timm or transformers, with the data config its inputs need.

`load_model` resolves a name in this order:

1. a local directory (it must hold a ``config.json``): a transformers model (``AutoModelForImageClassification``),
   or a timm model when the config is timm's (it has ``architecture`` and no ``model_type``);
2. ``hf-hub:<repo>`` / ``local-dir:<path>``: a timm model directory on the Hub or on disk;
3. a timm registry name, optionally prefixed ``timm/`` (``resnet18``, ``timm/resnet50.a1_in1k``,
   ``cifar_resnet56``);
4. any other name with a ``/``: a transformers Hub id.

Anything else raises ``ValueError`` with the closest timm names.

A model directory is data: its ``config.json`` passes the allow-list of :mod:`hf_prune.hub.trust`
(registry architectures, bounded sizes and plain names; nothing that names files, sources, code
or kernels), its files must not link outside it, and only safetensors weights are read.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from typing import Any

import timm
import timm.data
import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers import CONFIG_MAPPING, AutoImageProcessor, AutoModelForImageClassification, PretrainedConfig

from hf_prune.hub.trust import (
    check_timm_source,
    check_transformers_config,
    contained_file,
    read_json_object,
    timm_data_fields,
)

logger = logging.getLogger(__name__)

# Inputs this small are CIFAR-like: augment with pad-and-crop instead of RandomResizedCrop.
CIFAR_STYLE_MAX_SIZE = 64
_TIMM_PREFIX = "timm/"
_HUB_SOURCE, _LOCAL_SOURCE = "hf-hub:", "local-dir:"
_WEIGHTS_NAME = "model.safetensors"
# PIL resample codes used by transformers image processors -> torchvision interpolation names.
_PIL_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


@dataclass
class ImageDataConfig:
    """What the input transforms need to know about a model.

    Attributes:
        input_size: (channels, height, width) the model expects.
        mean: Per-channel normalization mean.
        std: Per-channel normalization std.
        interpolation: torchvision interpolation name used when resizing.
        crop_pct: Eval center-crop fraction: resize to size / crop_pct, then crop to size.
        cifar_style: Small (<= 64 px) inputs: train with RandomCrop(padding=4) + flip.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    cifar_style: bool = False


@dataclass
class LoadedModel:
    """A freshly built model and what is needed to rebuild it and feed it.

    Attributes:
        model: The model (timm ``nn.Module`` or transformers ``PreTrainedModel``).
        source: ``"timm"`` or ``"transformers"``.
        name: timm model name (no ``timm/`` prefix) or transformers Hub id / directory.
        model_args: timm: kwargs for ``timm.create_model(name, **model_args)``; transformers: ``{}``
            (the architecture lives on ``model.config``).
        data_config: Input size and normalization for the transforms.
    """

    model: torch.nn.Module
    source: str
    name: str
    model_args: dict[str, Any]
    data_config: ImageDataConfig


def load_model(
        name_or_path: str,
        num_labels: int,
        *,
        pretrained: bool = False,
        id2label: dict[int, str] | None = None,
        image_size: int | None = None,
) -> LoadedModel:
    """Build an image classifier with `num_labels` outputs from a timm name, Hub id or local dir.

    Args:
        name_or_path: timm name (``resnet18``, ``timm/resnet50.a1_in1k``, ``cifar_resnet56``,
            ``hf-hub:...``), transformers Hub id (``google/vit-base-patch16-224``) or a local
            directory holding a ``config.json``.
        num_labels: Number of classes; the classifier is (re)built with this many outputs.
        pretrained: Load weights (from the Hub, unless `name_or_path` is a local directory).
            Without it the architecture is randomly initialized.
        id2label: Class names for transformers configs (default ``LABEL_i``).
        image_size: Input resolution overriding the model's default (timm models with a fixed
            input size, e.g. ViTs, are built for it; for transformers it is set on the config,
            and pretrained position embeddings of another size are re-initialized).

    Returns:
        The model, how to rebuild it, and its data config.

    Raises:
        ValueError: Unknown name (the message lists close timm names) or inconsistent labels.
        OSError: A config or weights download failed (e.g. offline).
        RuntimeError: `pretrained` was asked for a timm model that has no weights.
    """
    if id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries but num_labels is {num_labels}")
    if name_or_path.startswith(_LOCAL_SOURCE):
        name_or_path = name_or_path.removeprefix(_LOCAL_SOURCE)
    if name_or_path.startswith(_HUB_SOURCE):
        directory = _download_timm_dir(name_or_path.removeprefix(_HUB_SOURCE), pretrained)
        return _load_timm_dir(directory, _read_config(directory), num_labels, pretrained, image_size)
    if os.path.isdir(name_or_path):
        config = _read_config(name_or_path)
        if "architecture" in config and "model_type" not in config:
            return _load_timm_dir(name_or_path, config, num_labels, pretrained, image_size)
        return _load_transformers(name_or_path, num_labels, pretrained, id2label, image_size, local_config=config)
    timm_name = _resolve_timm_name(name_or_path)
    if timm_name is not None:
        return _load_timm(timm_name, num_labels, pretrained, image_size)
    if "/" in name_or_path:
        return _load_transformers(name_or_path, num_labels, pretrained, id2label, image_size, local_config=None)
    raise _unknown_model_error(name_or_path)


def _read_config(directory: str) -> dict[str, Any]:
    """The config.json of a model directory, after checking that none of its files links outside it."""
    for name in os.listdir(directory):
        if name.endswith((".json", ".safetensors")):
            contained_file(directory, name)
    try:
        return read_json_object(directory, "config.json")
    except FileNotFoundError:
        raise ValueError(f"Model directory {directory!r} has no config.json") from None


def _download_timm_dir(repo_id: str, pretrained: bool) -> str:
    """The Hub snapshot of a timm model: its config, and its safetensors weights when `pretrained`."""
    patterns = ["config.json", _WEIGHTS_NAME] if pretrained else ["config.json"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except OSError as err:
        raise _download_error(_HUB_SOURCE + repo_id, "pretrained weights" if pretrained else "config", err) from err


def _load_timm_dir(
        directory: str, config: dict[str, Any], num_labels: int, pretrained: bool, image_size: int | None
) -> LoadedModel:
    """Build the timm model a directory's config names; with `pretrained`, load its safetensors weights.

    The classifier is re-initialized when the directory's model has another number of classes.
    """
    try:
        architecture = config.get("architecture")
        model_args = check_timm_source(architecture, config.get("model_args") or {})
        data_fields = timm_data_fields(config.get("pretrained_cfg"))
    except ValueError as err:
        raise ValueError(f"{directory}/config.json: {err}") from err
    if image_size is not None and data_fields.get("fixed_input_size"):
        model_args["img_size"] = image_size
    model_args["num_classes"] = num_labels
    model = timm.create_model(architecture, pretrained=False, pretrained_cfg_overlay=data_fields, **model_args)
    if pretrained:
        _load_timm_weights(model, directory, saved_classes=config.get("num_classes"))
    return _timm_loaded_model(model, architecture, model_args, image_size)


def _load_timm_weights(model: torch.nn.Module, directory: str, saved_classes: Any) -> None:
    path = contained_file(directory, _WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{directory} has no {_WEIGHTS_NAME}: only safetensors weights are read (pickles run code)")
    try:
        state_dict = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is corrupted or truncated ({err}): save or download it again") from err
    classifier = model.pretrained_cfg.get("classifier")
    replaced = set()
    if saved_classes != model.num_classes and classifier:
        replaced = {f"{classifier}.weight", f"{classifier}.bias"}
        state_dict = {key: value for key, value in state_dict.items() if key not in replaced}
    result = model.load_state_dict(state_dict, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - replaced:
        raise ValueError(
            f"{path} does not fit {model.pretrained_cfg.get('architecture')}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )


def check_model_name(name_or_path: str) -> None:
    """Raise `load_model`'s ValueError for a name it cannot resolve, without building or downloading anything.

    For scripts, to fail on a typo before loading data. Local directories, ``hf-hub:``/``local-dir:``
    sources and Hub ids (``owner/name``) are only checked by loading them.
    """
    if os.path.isdir(name_or_path) or ":" in name_or_path:
        return
    if _resolve_timm_name(name_or_path) is None and "/" not in name_or_path:
        raise _unknown_model_error(name_or_path)


def _resolve_timm_name(name: str) -> str | None:
    """The name to pass to `timm.create_model`, or None when timm does not know `name`."""
    stripped = name.removeprefix(_TIMM_PREFIX)
    if timm.is_model(stripped):
        return stripped
    if name.startswith(_TIMM_PREFIX):
        # A timm/ Hub repo always names a registry architecture: this is a typo or an old timm.
        raise _unknown_model_error(name)
    return None


def _unknown_model_error(name: str) -> ValueError:
    """ValueError naming `name` and the closest timm model names."""
    candidates = timm.list_models()
    matches = difflib.get_close_matches(name.removeprefix(_TIMM_PREFIX).split(".")[0], candidates, n=5)
    hint = f" Did you mean: {', '.join(matches)}?" if matches else ""
    return ValueError(
        f"Unknown model {name!r}: not a local directory with a config.json, not a timm model name "
        f"(timm {timm.__version__} knows {len(candidates)}) and not a Hub id of the form owner/name.{hint}"
    )


def _download_error(name: str, what: str, err: Exception) -> OSError:
    """OSError explaining that the `what` of `name` could not be fetched and how to proceed offline."""
    config_note = " A Hub id needs the Hub for its config even without --pretrained." if what == "config" else ""
    return OSError(
        f"Could not fetch the {what} of model {name!r} from the Hugging Face Hub "
        f"({type(err).__name__}: {err}). Loading pretrained weights (--pretrained / pretrained=True) needs "
        f"network access to the Hub, or a local directory holding the model (config.json + weights).{config_note} "
        "To proceed offline, pass pretrained=False with a timm model name (e.g. cifar_resnet56, resnet18), "
        "or pass the path of a local model directory."
    )


def _load_timm(name: str, num_labels: int, pretrained: bool, image_size: int | None) -> LoadedModel:
    """Create a timm model with `num_labels` classes and resolve its data config."""
    kwargs: dict[str, Any] = {"num_classes": num_labels}
    default_cfg = timm.models.get_pretrained_cfg(name)
    if pretrained and (default_cfg is None or not default_cfg.has_weights):
        raise RuntimeError(
            f"timm model {name!r} has no pretrained weights; use pretrained=False (random init) "
            "or load a trained checkpoint directory instead."
        )
    # Models with position embeddings (ViTs) bake the input size in at construction.
    if image_size is not None and default_cfg is not None and default_cfg.fixed_input_size:
        kwargs["img_size"] = image_size
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as err:
        raise _download_error(name, "pretrained weights" if pretrained else "config", err) from err
    return _timm_loaded_model(model, name, dict(getattr(model, "_model_args", kwargs)), image_size)


def _timm_loaded_model(
        model: torch.nn.Module, name: str, model_args: dict[str, Any], image_size: int | None
) -> LoadedModel:
    """A timm model with its rebuild arguments and data config."""
    data = timm.data.resolve_data_config({}, model=model)
    channels = data["input_size"][0]
    input_size = (channels, image_size, image_size) if image_size else tuple(data["input_size"])
    data_config = ImageDataConfig(
        input_size=input_size,
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        interpolation=data["interpolation"],
        crop_pct=data["crop_pct"],
        cifar_style=max(input_size[1:]) <= CIFAR_STYLE_MAX_SIZE,
    )
    return LoadedModel(model=model, source="timm", name=name, model_args=model_args, data_config=data_config)


def _load_transformers(
        name: str,
        num_labels: int,
        pretrained: bool,
        id2label: dict[int, str] | None,
        image_size: int | None,
        *,
        local_config: dict[str, Any] | None,
) -> LoadedModel:
    """Build an AutoModelForImageClassification from a local dir (its config given) or Hub id."""
    local = local_config is not None
    config_kwargs: dict[str, Any] = {"num_labels": num_labels}
    if id2label is not None:
        config_kwargs["id2label"] = {int(i): label for i, label in id2label.items()}
        config_kwargs["label2id"] = {label: int(i) for i, label in id2label.items()}
    if image_size is not None:
        config_kwargs["image_size"] = image_size
    if local_config is None:
        try:
            local_config, _ = PretrainedConfig.get_config_dict(name)
        except OSError as err:
            raise _download_error(name, "config", err) from err
    try:
        checked = check_transformers_config(local_config)
    except ValueError as err:
        raise ValueError(f"the config.json of {name!r}: {err}") from err
    config = CONFIG_MAPPING[checked["model_type"]].from_dict(checked, **config_kwargs)
    if pretrained:
        try:
            # The checkpoint's classifier has its own number of classes; it is re-initialized.
            model = AutoModelForImageClassification.from_pretrained(
                name, config=config, ignore_mismatched_sizes=True, use_safetensors=True
            )
        except OSError as err:
            if local:
                raise
            raise _download_error(name, "pretrained weights", err) from err
    else:
        model = AutoModelForImageClassification.from_config(config)
    return LoadedModel(
        model=model,
        source="transformers",
        name=name,
        model_args={},
        data_config=_transformers_data_config(name, config, local=local),
    )


def _transformers_data_config(name: str, config: PretrainedConfig, *, local: bool) -> ImageDataConfig:
    """Input size from the model config; normalization from the image processor when there is one."""
    size = getattr(config, "image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    channels = getattr(config, "num_channels", 3)
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    interpolation, crop_pct = "bilinear", 1.0
    processor = _image_processor(name, local=local)
    if processor is not None:
        mean = getattr(processor, "image_mean", None) or mean
        std = getattr(processor, "image_std", None) or std
        resample = getattr(processor, "resample", None)
        if resample is not None:
            interpolation = _PIL_RESAMPLE_NAMES.get(int(resample), interpolation)
        crop_pct = getattr(processor, "crop_pct", None) or crop_pct
    if len(mean) != channels:
        # Processors carry RGB statistics; a grayscale (num_channels=1) model gets their average.
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return ImageDataConfig(
        input_size=(channels, height, width),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        interpolation=interpolation,
        crop_pct=float(crop_pct),
        cifar_style=max(height, width) <= CIFAR_STYLE_MAX_SIZE,
    )


def _image_processor(name: str, *, local: bool) -> Any | None:
    """The model's image processor, or None when it has none (ImageNet statistics are used then).

    A Hub id only reaches this point after its config was fetched, so the Hub is reachable.
    """
    if local and not os.path.isfile(os.path.join(name, "preprocessor_config.json")):
        return None
    try:
        return AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError) as err:
        logger.warning("No usable image processor for %s (%s); using ImageNet mean/std.", name, err)
        return None
