"""What a model directory may steer: one allow-list, applied wherever hf_prune reads a config.json.

A model directory (a Hub download, someone else's output folder) is data. Its ``config.json``
may choose an architecture from a registry (timm's models, transformers' image classifiers) and
the sizes it is built with. It may not name files, sources (``hf-hub:``, ``local-dir:``), devices,
dtypes, attention kernels or code, and sizes beyond :data:`MAX_SIZE` are refused before anything
is built. A composite config's sub-configs (CLIP's ``vision_config``) pass the same allow-list, at
most :data:`MAX_CONFIG_DEPTH` levels deep. Every file read from a directory must resolve inside it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import timm
import transformers
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

# Largest integer (classes, widths, depths, heads) or float a config may set.
MAX_SIZE = 2**20
MAX_LIST_LENGTH = 4096
MAX_LABEL_LENGTH = 512
# Sub-configs (vision_config) and their sections (rope_parameters.full_attention) nest at most this deep.
MAX_CONFIG_DEPTH = 3
# Strings are names ("gelu", "avg", "layernorm", "5.24.0"): no path separator, no scheme, no source prefix.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.+\-]{0,64}")

# timm.create_model arguments that load files or weights, or choose where and how the model lives.
TIMM_LOADING_ARGS = frozenset({
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
    "device", "dtype", "features_only", "scriptable", "exportable", "no_jit",
})
# transformers config fields that choose code, kernels, quantization or another checkpoint.
TRANSFORMERS_LOADING_FIELDS = frozenset({
    "auto_map", "attn_implementation", "_attn_implementation", "experts_implementation",
    "quantization_config", "backbone", "backbone_config", "backbone_kwargs", "use_timm_backbone",
    "use_pretrained_backbone", "custom_pipelines",
})
# Free-text class names: never used as paths, only bounded.
LABEL_FIELDS = frozenset({"id2label", "label2id", "label_names"})
# Descriptive fields that nothing is built from (hf_prune reads its own section separately): dropped.
DESCRIPTIVE_FIELDS = frozenset({"_name_or_path", "pretrained_cfg", "hf_prune"})
# timm pretrained_cfg fields that describe the inputs (read for the data config, nothing else).
TIMM_DATA_FIELDS = ("input_size", "fixed_input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def check_timm_source(architecture: Any, model_args: Any) -> dict[str, Any]:
    """The ``create_model`` kwargs of a timm source, once they pass the allow-list.

    Raises:
        ValueError: ``architecture`` is not a timm registry name, or ``model_args`` names a
            loading argument or holds a value that is not a bounded size or plain name.
    """
    if not isinstance(architecture, str) or not _PLAIN_NAME.fullmatch(architecture):
        raise ValueError(
            f"'architecture' is {architecture!r}: a model directory names a timm registry model (e.g. "
            "'resnet18'); sources such as 'hf-hub:' or 'local-dir:' and paths are never followed"
        )
    if not timm.is_model(architecture):
        raise ValueError(
            f"'architecture' {architecture!r} is not a model of timm {timm.__version__}: upgrade timm "
            "(pip install -U timm) if a newer timm saved it, or correct the name"
        )
    if not isinstance(model_args, Mapping):
        raise ValueError(f"'model_args' is a {type(model_args).__name__}: expected an object of create_model arguments")
    loading = sorted(TIMM_LOADING_ARGS & set(model_args))
    if loading:
        raise ValueError(
            f"model args {loading} would make timm load files or weights, or choose a device or dtype; a "
            "slim model's architecture is rebuilt without them (its weights come from model.safetensors)"
        )
    for key, value in model_args.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"'model_args' has the key {key!r}: create_model arguments are identifiers")
        check_value(value, f"model_args.{key}")
    return dict(model_args)


def check_transformers_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A transformers image-classifier config, once it passes the allow-list (descriptive fields dropped).

    Raises:
        ValueError: the ``model_type`` / ``architectures`` is not a transformers image classifier,
            a field chooses code, kernels or other checkpoints, or a value is not a bounded size
            or plain name.
    """
    model_type = config.get("model_type")
    classes = _image_classifier_classes(model_type)
    architectures = config.get("architectures") or list(classes[:1])
    if not isinstance(architectures, list) or len(architectures) != 1 or architectures[0] not in classes:
        raise ValueError(
            f"'architectures' is {architectures!r}: a {model_type} model directory builds one of {list(classes)}"
        )
    timm_wrapper = model_type == "timm_wrapper"
    checked = _checked_fields({k: v for k, v in config.items() if not (timm_wrapper and k == "model_args")}, "", 0)
    checked["architectures"] = architectures
    if timm_wrapper:
        checked["model_args"] = check_timm_source(config.get("architecture"), config.get("model_args") or {})
    return checked


def _checked_fields(config: Mapping[str, Any], prefix: str, depth: int) -> dict[str, Any]:
    """The fields of a config, or of a sub-config at ``depth`` (descriptive fields dropped)."""
    checked = {}
    for key, value in config.items():
        where = f"{prefix}{key}"
        if key in TRANSFORMERS_LOADING_FIELDS:
            raise ValueError(
                f"field '{where}' would choose code, kernels or another checkpoint; hf_prune builds the "
                "architecture from sizes only: remove it"
            )
        if key in DESCRIPTIVE_FIELDS:
            continue
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"config.json has the field {prefix}{key!r}: config fields are identifiers")
        if key in LABEL_FIELDS:
            check_labels(value, where)
        elif isinstance(value, Mapping):
            if depth == MAX_CONFIG_DEPTH:
                raise ValueError(
                    f"'{where}' nests sub-configs more than {MAX_CONFIG_DEPTH} levels deep, which no "
                    "transformers image classifier does: flatten or remove it"
                )
            value = _checked_fields(value, f"{where}.", depth + 1)
        else:
            check_value(value, where)
        checked[key] = value
    return checked


def check_value(value: Any, where: str) -> None:
    """Accept a bounded number, a bool, null, a plain name, or a bounded list of those."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_SIZE:
            raise ValueError(f"'{where}' is {value}: sizes and factors are finite and at most {MAX_SIZE}")
    elif isinstance(value, str):
        if not _PLAIN_NAME.fullmatch(value):
            raise ValueError(
                f"'{where}' is {value!r}: values are plain names (letters, digits, '_.+-', at most 64); "
                "paths, URLs and sources are never followed"
            )
    elif isinstance(value, list | tuple) and len(value) <= MAX_LIST_LENGTH:
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]")
    else:
        raise ValueError(f"'{where}' is a {type(value).__name__} of this size, which a model directory cannot set")


def check_labels(labels: Any, where: str) -> None:
    """Class names: none, or at most :data:`MAX_SIZE` strings (or string-to-index pairs) of bounded length.

    ``None`` is what a config class that declares ``num_labels`` as its own field (transformers'
    ``PvtConfig``) saves: it states the count, not the names.
    """
    if labels is None:
        return
    items = list(labels.items()) if isinstance(labels, Mapping) else labels
    if not isinstance(items, list | tuple):
        raise ValueError(f"'{where}' is a {type(labels).__name__}: class names are an object or a list")
    if len(items) > MAX_SIZE:
        raise ValueError(f"'{where}' must hold at most {MAX_SIZE} class names")
    for item in items:
        for part in item if isinstance(item, tuple) else (item,):
            if not isinstance(part, str | int) or isinstance(part, bool) or len(str(part)) > MAX_LABEL_LENGTH:
                raise ValueError(
                    f"'{where}' holds {part!r}: class names are strings of at most {MAX_LABEL_LENGTH} characters"
                )


def timm_data_fields(pretrained_cfg: Any) -> dict[str, Any]:
    """The input-describing fields of a saved timm ``pretrained_cfg``, checked; the rest is never read."""
    if not isinstance(pretrained_cfg, Mapping):
        return {}
    fields = {key: pretrained_cfg[key] for key in TIMM_DATA_FIELDS if key in pretrained_cfg}
    for key, value in fields.items():
        check_value(value, f"pretrained_cfg.{key}")
    return fields


def contained_file(directory: str | os.PathLike, name: str) -> str:
    """The resolved path of ``name`` in ``directory``, refused when a link takes it outside.

    A Hub cache snapshot's files link into the blobs of the same repo folder, which counts as inside.

    Raises:
        ValueError: the file resolves outside the directory.
    """
    root = _containment_root(directory)
    path = os.path.realpath(os.path.join(directory, name))
    if os.path.commonpath([path, root]) != root:
        raise ValueError(
            f"{os.path.join(directory, name)} links to {path}, outside {root}: a model directory's files must be "
            "inside it (copy the file in instead of linking it)"
        )
    return path


def read_json_object(directory: str | os.PathLike, name: str) -> dict[str, Any]:
    """The JSON object in ``directory/name`` (contained in the directory).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: it links outside, is not valid JSON or not an object (the message names the fix).
    """
    path, real_path = os.path.join(directory, name), contained_file(directory, name)
    if not os.path.isfile(real_path):
        raise FileNotFoundError(path)
    try:
        with open(real_path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): save or download the model again") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object: not a model config")
    return value


def _containment_root(directory: str | os.PathLike) -> str:
    real = os.path.realpath(directory)
    snapshots = os.path.dirname(real)
    repo = os.path.dirname(snapshots)
    if os.path.basename(snapshots) == "snapshots" and os.path.basename(repo).startswith("models--"):
        return repo
    return real


def _image_classifier_classes(model_type: Any) -> tuple[str, ...]:
    classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    if classes is None:
        raise ValueError(
            f"'model_type' is {model_type!r}, not an image classifier of transformers {transformers.__version__} "
            f"(e.g. {', '.join(list(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)[:6])}, ...)"
        )
    return classes if isinstance(classes, tuple) else (classes,)
