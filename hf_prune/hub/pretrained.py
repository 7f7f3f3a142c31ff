"""Slim models on disk: ``save_pretrained`` and ``AutoPrunedModel.from_pretrained``.

A saved slim model is a directory (or Hub repo) holding

* ``model.safetensors`` -- the weights, nothing executable;
* ``config.json`` -- the source architecture in its library's own format (timm's
  ``architecture`` / ``model_args`` / ``pretrained_cfg``, or the transformers config), plus an
  ``hf_prune`` section: the shape spec relative to that architecture, the method, the target
  and MACs/params before and after;
* ``README.md`` -- the model card, and the plots it shows.

Loading builds the source architecture on the meta device, reshapes it with the spec and
assigns the safetensors weights strictly. Pickles are never read. When a transformers model's
widths are uniform, the architecture's own config already describes it: that config is written,
the spec is empty, and vanilla ``AutoModelForImageClassification.from_pretrained`` loads it too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hf_prune.structure.attention import find_attention
from hf_prune.structure.shape_spec import ShapeSpecError, apply_shape_spec, export_shape_spec

from .source import ModelSource

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class PrunedModelError(ValueError):
    """A directory or repo that does not hold a loadable hf_prune model."""


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    source: ModelSource,
    pruning: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> str:
    """Save a slim ``model`` so that :meth:`AutoPrunedModel.from_pretrained` rebuilds it.

    Every file is first written to a staging folder inside ``save_directory`` and then moved
    into place, ``config.json`` last: a save that fails leaves the previous model intact.

    Args:
        model: the slim model (any device, unwrapped).
        save_directory: created if needed.
        source: the dense architecture the model was pruned from.
        pruning: extra facts for the ``hf_prune`` section of ``config.json`` (method, target,
            MACs/params, ...); must be JSON.
        model_card: the ``README.md`` text.
        extra_files: ``{name in the directory: path of an existing file}`` (e.g. plots).

    Returns:
        ``save_directory``.

    Raises:
        PrunedModelError: the model cannot be rebuilt from ``source`` plus its shape spec.
    """
    source = uniform_source(model, source)
    spec = _rebuildable_spec(model, source)
    library_section = {"format_version": FORMAT_VERSION, "library": source.library, "shape_spec": spec}
    config = {**source.to_config(), "hf_prune": {**library_section, **dict(pruning or {})}}
    state_dict = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}

    os.makedirs(save_directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".hf_prune-staging-", dir=save_directory)
    try:
        save_file(state_dict, os.path.join(staging, WEIGHTS_NAME), metadata={"format": "pt"})
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, os.path.join(staging, _plain_file_name(name)))
        if model_card is not None:
            _write_text(os.path.join(staging, MODEL_CARD_NAME), model_card)
        _write_text(os.path.join(staging, CONFIG_NAME), json.dumps(config, indent=2, default=_json_default))
        umask = os.umask(0)
        os.umask(umask)
        for name in sorted(os.listdir(staging), key=lambda name: name == CONFIG_NAME):
            os.chmod(os.path.join(staging, name), 0o666 & ~umask)  # staged files are private until now
            os.replace(os.path.join(staging, name), os.path.join(save_directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(save_directory)


class AutoPrunedModel:
    """Loads slim models saved by :func:`save_pretrained` (or ``PruningTrainer.save_model``)."""

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
    ) -> nn.Module:
        """Rebuild a slim model from a local directory or a Hub repo id, in eval mode.

        The source architecture is built on the meta device (no memory, no init), reshaped by
        the shape spec, and the safetensors weights are assigned strictly: a missing,
        unexpected or mis-shaped tensor is an error, never silently skipped.

        Raises:
            PrunedModelError: no ``config.json`` / ``hf_prune`` section / ``model.safetensors``,
                only pickled weights, a corrupted or truncated weights file, or a shape spec
                that does not fit the architecture.
        """
        directory = _resolve(name_or_path, revision=revision, token=token, cache_dir=cache_dir)
        config = cls.load_config(directory)
        try:
            source = ModelSource.from_config(config)
        except (ValueError, KeyError) as err:
            raise PrunedModelError(f"{directory}/{CONFIG_NAME} does not describe a buildable source: {err}") from err
        state_dict = _load_weights(directory)
        spec = config["hf_prune"]["shape_spec"]
        model = _build(source, spec, "meta", directory)
        if _has_non_persistent_buffers(model):
            model = _build(source, spec, device, directory)  # their values come from the constructor
            _load_strict(model, state_dict, directory, assign=False)
        else:
            _load_strict(model, state_dict, directory, assign=True)
        return model.to(device).eval()

    @staticmethod
    def load_config(directory: str | os.PathLike) -> dict[str, Any]:
        """The ``config.json`` of a local slim-model directory, checked for an ``hf_prune`` section."""
        path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(path):
            raise PrunedModelError(f"{directory} has no {CONFIG_NAME}: it is not a saved model directory")
        try:
            with open(path) as f:
                config = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PrunedModelError(f"{path} is not valid JSON ({err})") from err
        section = config.get("hf_prune") if isinstance(config, dict) else None
        if not isinstance(section, dict) or not isinstance(section.get("shape_spec"), dict):
            raise PrunedModelError(
                f"{path} has no 'hf_prune' section with a shape spec: save the model with "
                "PruningTrainer.save_model() or hf_prune.save_pretrained()"
            )
        if section.get("format_version") != FORMAT_VERSION:
            raise PrunedModelError(
                f"{path} has hf_prune format version {section.get('format_version')!r}; this hf_prune "
                f"reads version {FORMAT_VERSION}: upgrade hf_prune"
            )
        return config


def _resolve(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> str:
    if os.path.isdir(name_or_path):
        return str(name_or_path)
    try:
        return snapshot_download(
            str(name_or_path), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], repo_type="model", **hub_kwargs
        )
    except HFValidationError as err:
        raise PrunedModelError(f"{name_or_path!r} is neither a local directory nor a Hub repo id") from err


def _load_weights(directory: str) -> dict[str, torch.Tensor]:
    path = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(path):
        pickles = sorted(name for name in os.listdir(directory) if name.endswith(PICKLE_SUFFIXES))
        hint = f" (found {pickles}: pickled weights are never loaded, they can run code)" if pickles else ""
        raise PrunedModelError(f"{directory} has no {WEIGHTS_NAME}{hint}")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as err:
        raise PrunedModelError(f"{path} is corrupted or truncated ({err}): save or download it again") from err


def _build(source: ModelSource, spec: dict[str, Any], device: str | torch.device, directory: str) -> nn.Module:
    model = source.build(device)
    try:
        return apply_shape_spec(model, spec)
    except ShapeSpecError as err:
        raise PrunedModelError(f"the shape spec in {directory}/{CONFIG_NAME} does not fit {source.architecture}: {err}") from err


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], directory: str, *, assign: bool) -> None:
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as err:
        raise PrunedModelError(f"{directory}/{WEIGHTS_NAME} does not match its config: {err}") from err


def _has_non_persistent_buffers(model: nn.Module) -> bool:
    persistent = set(model.state_dict()) - set(dict(model.named_parameters()))
    return any(name not in persistent for name, _ in model.named_buffers())


def _rebuildable_spec(model: nn.Module, source: ModelSource) -> dict[str, Any]:
    """The spec of ``model`` relative to ``source``, checked by rebuilding it on the meta device."""
    spec = export_shape_spec(model, reference=source.build("meta"))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        rebuilt = apply_shape_spec(source.build("meta"), spec)
    except ShapeSpecError as err:
        _raise_not_rebuildable(source, str(err))
    found = {name: tuple(t.shape) for name, t in rebuilt.state_dict().items()}
    if expected != found:
        name = next(n for n in sorted(expected.keys() | found.keys()) if expected.get(n) != found.get(n))
        _raise_not_rebuildable(source, f"'{name}' has shape {expected.get(name)}, rebuilt {found.get(name)}")
    return spec


def _raise_not_rebuildable(source: ModelSource, problem: str) -> NoReturn:
    raise PrunedModelError(
        f"the model cannot be rebuilt from {source.library} '{source.architecture}' and its shape spec ({problem}). "
        "Was the model built with other arguments than the source records? Pass the right ModelSource."
    )


def uniform_source(model: nn.Module, source: ModelSource) -> ModelSource:
    """A transformers source whose config states the slim widths when they are uniform, else ``source``."""
    if source.library != "transformers":
        return source
    dense = source.build("meta")
    heads = {tuple(sorted(family.head_attributes(m).items())) for _, m, family in find_attention(model)}
    config = dict(source.model_args)
    widths = {
        "intermediate_size": _slim_sizes(model, dense, _linear_out, config.get("intermediate_size")),
        "hidden_size": _slim_sizes(model, dense, _layer_norm_width, config.get("hidden_size")),
    }
    if len(heads) != 1 or any(len(sizes) != 1 for sizes in widths.values()):
        return source
    head_attributes = dict(next(iter(heads)))
    config.update({key: sizes.pop() for key, sizes in widths.items()})
    config.update(num_attention_heads=head_attributes["num_heads"], head_dim=head_attributes["head_dim"])
    candidate = ModelSource(source.library, source.architecture, config)
    slim_shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        candidate_shapes = {name: tuple(t.shape) for name, t in candidate.build("meta").state_dict().items()}
    except (ValueError, TypeError):
        return source
    return candidate if candidate_shapes == slim_shapes else source


def _slim_sizes(model: nn.Module, dense: nn.Module, size_of: Callable[[nn.Module], int | None], dense_size: Any) -> set:
    """The sizes in ``model`` of the modules whose size is ``dense_size`` in ``dense``."""
    slim_modules = dict(model.named_modules())
    return {
        size_of(slim_modules[name])
        for name, module in dense.named_modules()
        if dense_size is not None and size_of(module) == dense_size and name in slim_modules
    }


def _linear_out(module: nn.Module) -> int | None:
    return module.out_features if isinstance(module, nn.Linear) else None


def _layer_norm_width(module: nn.Module) -> int | None:
    return module.normalized_shape[-1] if isinstance(module, nn.LayerNorm) else None


def _plain_file_name(name: str) -> str:
    if os.path.basename(name) != name or name.startswith("."):
        raise ValueError(f"extra file name {name!r} must be a plain file name")
    return name


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Size | tuple):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
