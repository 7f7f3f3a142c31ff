"""Slim models on disk: ``save_pretrained`` and ``AutoPrunedModel.from_pretrained``.

A saved slim model is a directory (or Hub repo) holding

* ``model.safetensors`` -- the weights, nothing executable;
* ``config.json`` -- the source architecture in its library's own format (timm's
  ``architecture`` / ``model_args`` / ``pretrained_cfg``, or the transformers config), plus an
  ``hf_prune`` section: the shape spec relative to that architecture, the method, the target
  and MACs/params before and after;
* ``README.md`` -- the model card, and the plots it shows;
* the preprocessing used in training (see :mod:`hf_prune.hub.preprocessing`).

When no architecture config can state the slim widths (timm models, per-layer widths),
``config.json`` has ``model_type: "hf_prune"``: after ``import hf_prune`` transformers'
``AutoModelForImageClassification`` and ``pipeline`` load it through :mod:`hf_prune.hub.auto`,
which calls the same loader. Such a transformers config keeps the dense config under
``source_config`` and states the slim widths per layer in ``layer_widths``.

Loading builds the source architecture on the meta device, reshapes it with the spec and
assigns the safetensors weights strictly. Pickles are never read. When a transformers model's
widths are uniform, the architecture's own config already describes it: that config is written,
the spec is empty, and vanilla ``AutoModelForImageClassification.from_pretrained`` loads it too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoImageProcessor, PreTrainedModel, TimmWrapperImageProcessor
from transformers.image_processing_utils import BaseImageProcessor

from hf_prune.models.forward import logits_of
from hf_prune.structure.attention import find_attention
from hf_prune.structure.shape_spec import ShapeSpecError, apply_shape_spec, export_shape_spec

from .model_dir import discard, new_version, publish, write_text_atomic
from .preprocessing import PREPROCESSOR_NAME, processor_input_size, timm_pretrained_cfg
from .source import MODEL_TYPE, SOURCE_CONFIG_KEY, ModelSource
from .trust import check_labels, contained_file, read_json_object

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Computed (non-persistent) buffers a config may make the loader allocate, e.g. attention index tables.
MAX_BUFFER_BYTES = 2**30


WRAPPER_CLASS_NAME = "PrunedModelForImageClassification"
# Where AutoPrunedModel.from_pretrained leaves what it read, so that saving the model again needs nothing else.
LOADED_FACTS_ATTRIBUTE = "hf_prune_loaded"


class PrunedModelError(ValueError):
    """A directory or repo that does not hold a loadable hf_prune model."""


@dataclass(frozen=True)
class LoadedFacts:
    """What a loaded slim model was saved with: its source, class names and image processor."""

    source: ModelSource
    labels: list[str]
    image_processor: BaseImageProcessor | None


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    source: ModelSource | None = None,
    pruning: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    extra_files: Mapping[str, str] | None = None,
    image_processor: BaseImageProcessor | None = None,
    labels: Sequence[str] | None = None,
) -> str:
    """Save a slim ``model`` so that :meth:`AutoPrunedModel.from_pretrained` rebuilds it.

    All or nothing: the files are written to a new version folder inside ``save_directory``
    (``.hf_prune/``), reloaded and checked, and published with one rename (see
    :mod:`hf_prune.hub.model_dir`). A failure or kill at any moment leaves the previous model
    complete; other files in ``save_directory`` are never touched.

    Args:
        model: the slim model (any device, unwrapped), or one loaded by ``from_pretrained``.
        save_directory: created if needed.
        source: the dense architecture the model was pruned from; by default the one a model
            loaded by ``from_pretrained`` was saved with.
        pruning: extra facts for the ``hf_prune`` section of ``config.json`` (method, target,
            MACs/params, ...); must be JSON.
        model_card: the ``README.md`` text.
        extra_files: ``{name in the directory: path of an existing file}`` (e.g. plots).
        image_processor: the eval preprocessing of training (see
            :func:`~hf_prune.hub.preprocessing.image_processor_for`): a timm model's goes into
            ``config.json``'s ``pretrained_cfg``, a transformers model's into ``preprocessor_config.json``.
        labels: class names by index; by default a transformers model's ``id2label``.

    Returns:
        ``save_directory``.

    Raises:
        PrunedModelError: the model cannot be rebuilt from ``source`` plus its shape spec, or the
            reloaded model's logits differ (a setting the config cannot record).
    """
    model, source, image_processor, labels = _with_loaded_facts(model, source, image_processor, labels)
    dense_source = source
    source = _record_pooling(model, uniform_source(model, source))
    spec = _rebuildable_spec(model, source)
    library_section = {"format_version": FORMAT_VERSION, "library": source.library, "shape_spec": spec}
    section = {**library_section, **dict(pruning or {})}
    input_size = section.get("input_size") or processor_input_size(image_processor) or source.input_size()
    config = _saved_config(model, source, dense_source, section, labels, image_processor, input_size)
    state_dict = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}

    os.makedirs(save_directory, exist_ok=True)
    version = new_version(save_directory)
    try:
        save_file(state_dict, os.path.join(version, WEIGHTS_NAME), metadata={"format": "pt"})
        _fsync_file(os.path.join(version, WEIGHTS_NAME))
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, os.path.join(version, _plain_file_name(name)))
            _fsync_file(os.path.join(version, name))
        if model_card is not None:
            write_text_atomic(os.path.join(version, MODEL_CARD_NAME), model_card)
        if source.library == "transformers" and image_processor is not None:
            write_text_atomic(os.path.join(version, PREPROCESSOR_NAME), image_processor.to_json_string())
        write_text_atomic(os.path.join(version, CONFIG_NAME), json.dumps(config, indent=2, default=_json_default))
        _check_round_trip(model, version, input_size)
        publish(save_directory, version)
    except BaseException:
        discard(save_directory, version)
        raise
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

        The directory is untrusted data: ``config.json`` passes the allow-list of
        :mod:`hf_prune.hub.trust` and no file read may link outside the directory. The source
        architecture is built on the meta device (no memory, no init), reshaped by the shape
        spec, its computed buffers are rebuilt, and the safetensors weights are assigned
        strictly: a missing, unexpected or mis-shaped tensor is an error, never silently skipped.

        Raises:
            PrunedModelError: no ``config.json`` / ``hf_prune`` section / ``model.safetensors``,
                only pickled weights, a corrupted or truncated weights file, a config field
                outside the allow-list, a file linking outside the directory, or a shape spec
                that is malformed or does not fit the architecture.
        """
        return cls.load(name_or_path, device=device, revision=revision, token=token, cache_dir=cache_dir)[0]

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu",
             **hub_kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
        """:meth:`from_pretrained` that also returns the checked ``config.json`` (used by the Auto classes)."""
        directory = _resolve(name_or_path, **hub_kwargs)
        config = cls.load_config(directory)
        try:
            source = ModelSource.from_config(config)
        except (ValueError, KeyError, TypeError) as err:
            raise PrunedModelError(f"{directory}/{CONFIG_NAME} does not describe a buildable source: {err}") from err
        model = _build(source, config["hf_prune"]["shape_spec"], directory)
        weights = _contained(directory, WEIGHTS_NAME)
        _check_weight_shapes(model, weights, directory)
        _rebuild_non_persistent_buffers(model, source, config["hf_prune"]["shape_spec"], directory)
        _load_strict(model, _load_weights(directory, weights), directory)
        facts = LoadedFacts(source, _saved_labels(config, directory), _saved_image_processor(directory, source))
        setattr(model, LOADED_FACTS_ATTRIBUTE, facts)
        return model.to(device).eval(), config

    @staticmethod
    def load_config(directory: str | os.PathLike) -> dict[str, Any]:
        """The ``config.json`` of a local slim-model directory, checked for an ``hf_prune`` section."""
        path = os.path.join(directory, CONFIG_NAME)
        try:
            config = read_json_object(directory, CONFIG_NAME)
        except FileNotFoundError:
            raise PrunedModelError(f"{directory} has no {CONFIG_NAME}: it is not a saved model directory") from None
        except ValueError as err:
            raise PrunedModelError(str(err)) from err
        section = config.get("hf_prune")
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


def _with_loaded_facts(
    model: nn.Module, source: ModelSource | None, image_processor: BaseImageProcessor | None, labels: Sequence[str] | None
) -> tuple[nn.Module, ModelSource, BaseImageProcessor | None, list[str]]:
    """The slim module to save (an Auto-class wrapper unwrapped), with what was not given taken from its load."""
    if isinstance(model, PreTrainedModel) and model.config.model_type == MODEL_TYPE:
        model = model.slim
    facts = getattr(model, LOADED_FACTS_ATTRIBUTE, None)
    if facts is not None:
        source = source or facts.source
        image_processor = image_processor if image_processor is not None else facts.image_processor
        labels = labels or facts.labels
    if source is None:
        raise PrunedModelError(
            f"save_pretrained needs the source of this {type(model).__name__}: pass source=ModelSource.from_model(dense_model) "
            "(a model loaded with hf_prune's from_pretrained carries it)"
        )
    if labels is None and isinstance(model, PreTrainedModel):
        id2label = model.config.id2label or {}  # None where the config class declares num_labels itself (PvtConfig)
        labels = [id2label.get(index, f"LABEL_{index}") for index in range(model.config.num_labels)]
    return model, source, image_processor, list(labels or (f"LABEL_{i}" for i in range(getattr(model, "num_classes", 0))))


def _saved_config(
    model: nn.Module,
    source: ModelSource,
    dense_source: ModelSource,
    section: dict[str, Any],
    labels: list[str],
    image_processor: BaseImageProcessor | None,
    input_size: list[int],
) -> dict[str, Any]:
    """``config.json``: the architecture's own config where it states the slim model, else the ``hf_prune`` type."""
    label_fields = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    entry_point = {"model_type": MODEL_TYPE, "architectures": [WRAPPER_CLASS_NAME], **label_fields}
    if source.library == "transformers":
        if isinstance(image_processor, TimmWrapperImageProcessor):
            raise TypeError("a transformers model is saved with a transformers image processor (see image_processor_for)")
        config = {**source.to_config(), **label_fields}
        if not any(section["shape_spec"].get(key) for key in ("modules", "attention", "parameters")):
            return {**config, "hf_prune": section}
        return {**entry_point, "layer_widths": layer_widths(model, dense_source), SOURCE_CONFIG_KEY: config, "hf_prune": section}
    config = source.to_config()
    config["pretrained_cfg"] = timm_pretrained_cfg(source.pretrained_cfg, image_processor, input_size, len(labels))
    return {**entry_point, **config, "label_names": labels, "hf_prune": section}


def _saved_labels(config: dict[str, Any], directory: str) -> list[str]:
    """The class names in ``config.json``, by index (checked: bounded free text, integer indices)."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict):
        return []
    try:
        check_labels(id2label, "id2label")
        return [str(id2label[key]) for key in sorted(id2label, key=int)]
    except ValueError as err:
        raise PrunedModelError(f"{directory}/{CONFIG_NAME}: {err}") from err


def _saved_image_processor(directory: str, source: ModelSource) -> BaseImageProcessor | None:
    """The saved preprocessing: timm's ``pretrained_cfg`` data fields, or ``preprocessor_config.json``."""
    if source.library == "timm":
        return TimmWrapperImageProcessor(pretrained_cfg=source.pretrained_cfg) if source.pretrained_cfg else None
    if not os.path.isfile(_contained(directory, PREPROCESSOR_NAME)):
        return None
    try:
        return AutoImageProcessor.from_pretrained(directory, trust_remote_code=False)
    except (ValueError, OSError, TypeError) as err:
        raise PrunedModelError(f"{directory}/{PREPROCESSOR_NAME} is not a transformers image processor: {err}") from err


def _resolve(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> str:
    """A local directory as is, else the Hub snapshot holding config.json and model.safetensors."""
    if os.path.isdir(name_or_path):
        return str(name_or_path)
    try:
        return snapshot_download(
            str(name_or_path), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME], repo_type="model",
            **{key: value for key, value in hub_kwargs.items() if value is not None},
        )
    except HFValidationError as err:
        raise PrunedModelError(f"{name_or_path!r} is neither a local directory nor a Hub repo id") from err


def _contained(directory: str, name: str) -> str:
    try:
        return contained_file(directory, name)
    except ValueError as err:
        raise PrunedModelError(str(err)) from err


def _load_weights(directory: str, path: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as err:
        raise PrunedModelError(f"{path} is corrupted or truncated ({err}): save or download it again") from err


def _check_weight_shapes(model: nn.Module, path: str, directory: str) -> None:
    """Compare the weights file's header with the model built on meta, before any tensor is read."""
    if not os.path.isfile(path):
        pickles = sorted(name for name in os.listdir(directory) if name.endswith(PICKLE_SUFFIXES))
        hint = f" (found {pickles}: pickled weights are never loaded, they can run code)" if pickles else ""
        raise PrunedModelError(f"{directory} has no {WEIGHTS_NAME}{hint}")
    try:
        with safe_open(path, framework="pt") as weights:
            found = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError) as err:
        raise PrunedModelError(f"{path} is corrupted or truncated ({err}): save or download it again") from err
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if found != expected:
        name = next(n for n in sorted(expected.keys() | found.keys()) if expected.get(n) != found.get(n))
        raise PrunedModelError(
            f"{directory}/{WEIGHTS_NAME} does not match its config: '{name}' is {found.get(name)} in the weights "
            f"and {expected.get(name)} in the architecture (None: absent); save the model again"
        )


def _build(source: ModelSource, spec: dict[str, Any], directory: str) -> nn.Module:
    """The slim architecture on the meta device: nothing is allocated, whatever sizes the config names."""
    try:
        model = source.build("meta")
    except (ValueError, TypeError, RuntimeError, AssertionError) as err:
        raise PrunedModelError(
            f"{directory}/{CONFIG_NAME} names sizes that {source.library} '{source.architecture}' cannot be built "
            f"with ({type(err).__name__}: {err}): correct 'model_args' or save the model again"
        ) from err
    try:
        return apply_shape_spec(model, spec)
    except ShapeSpecError as err:
        raise PrunedModelError(f"the shape spec in {directory}/{CONFIG_NAME} does not fit {source.architecture}: {err}") from err
    except (AttributeError, TypeError) as err:
        raise PrunedModelError(
            f"the shape spec in {directory}/{CONFIG_NAME} is malformed ({type(err).__name__}: {err}): its 'modules', "
            "'attention' and 'parameters' sections map names to objects; save the model again"
        ) from err


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], directory: str) -> None:
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        raise PrunedModelError(f"{directory}/{WEIGHTS_NAME} does not match its config: {err}") from err


def _rebuild_non_persistent_buffers(
    model: nn.Module, source: ModelSource, spec: dict[str, Any], directory: str
) -> None:
    """Compute the buffers the weights file does not hold (e.g. Swin's relative position index) on CPU.

    They are computed by the libraries' own hooks (timm's ``init_non_persistent_buffers``,
    transformers' ``initialize_weights``) while the parameters are still on meta. A buffer no
    hook rebuilt (or whose hook needs the parameters' values: timm's SwinV2 builds its tables on
    the parameters' device) is taken from the slim architecture built once more on CPU.
    """
    placeholders = {}
    for module_name, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            if module._buffers.get(name) is not None:
                placeholders[(module_name, name)] = module._buffers[name] = _sentinel_like(module._buffers[name])
    if not placeholders:
        return
    size = sum(t.numel() * t.element_size() for t in placeholders.values())
    if size > MAX_BUFFER_BYTES:
        raise PrunedModelError(
            f"{directory}/{CONFIG_NAME} builds {size} bytes of computed buffers (limit {MAX_BUFFER_BYTES})"
        )
    if isinstance(model, PreTrainedModel):
        model.initialize_weights()
    for module in model.modules():
        if hasattr(module, "init_non_persistent_buffers"):
            try:
                module.init_non_persistent_buffers()
            except NotImplementedError:  # copied out of a meta tensor: its buffers stay stale
                pass
    modules = dict(model.named_modules())
    stale = [(module_name, name) for (module_name, name), placeholder in placeholders.items()
             if _is_sentinel(modules[module_name]._buffers[name], placeholder)]
    if stale:
        rebuilt = dict(apply_shape_spec(source.build("cpu"), spec).named_modules())
        for module_name, name in stale:
            modules[module_name]._buffers[name] = rebuilt[module_name]._buffers[name]


def _sentinel_like(buffer: torch.Tensor) -> torch.Tensor:
    """A CPU tensor no hook would compute: NaN, or the smallest integer (bools cannot tell)."""
    if buffer.is_floating_point():
        fill = float("nan")
    else:
        fill = False if buffer.dtype == torch.bool else torch.iinfo(buffer.dtype).min
    return torch.full(buffer.shape, fill, dtype=buffer.dtype, device="cpu")


def _is_sentinel(buffer: torch.Tensor, placeholder: torch.Tensor) -> bool:
    """True while no hook computed ``buffer``: still on meta, or still the untouched placeholder."""
    if buffer.is_meta:
        return True
    if buffer is not placeholder:
        return False
    if buffer.is_floating_point():
        return bool(buffer.isnan().all())
    return buffer.dtype == torch.bool or torch.equal(buffer, _sentinel_like(buffer))


def _check_round_trip(model: nn.Module, version: str, input_size: list[int]) -> None:
    """Reload what was written and compare logits on one small input, before anything is published."""
    reference = next(model.parameters())
    reloaded = AutoPrunedModel.from_pretrained(version, device=reference.device).to(reference.dtype)
    inputs = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    inputs = inputs.to(reference.device, reference.dtype)
    modes = {module: module.training for module in model.modules()}
    # A forward replaced on the instance is a runtime setting, not the model: accelerate's
    # mixed precision wraps it in bf16 autocast. It is set aside while the class's forward runs.
    instance_forward = vars(model).pop("forward", None)
    model.eval()
    try:
        with torch.no_grad():
            expected, found = logits_of(model(inputs)).float(), logits_of(reloaded(inputs)).float()
    finally:
        for module, training in modes.items():
            module.training = training
        if instance_forward is not None:
            model.forward = instance_forward
    if expected.shape != found.shape or not torch.allclose(found, expected, rtol=1e-4, atol=1e-5):
        difference = (found - expected).abs().max().item() if expected.shape == found.shape else "shapes differ"
        raise PrunedModelError(
            f"the saved model does not reload exactly (max |logit difference| {difference}): the model has a setting "
            "that its config cannot record (e.g. a changed forward, or timm reset_classifier with another global_pool "
            "on a model without a 'global_pool' argument); nothing was saved. Build the model with create_model "
            "arguments that state the setting."
        )


def _record_pooling(model: nn.Module, source: ModelSource) -> ModelSource:
    """A timm source whose ``model_args`` state the model's global pooling when it differs from the built one."""
    pool = _pool_type(model)
    if source.library != "timm" or pool is None or pool == _pool_type(source.build("meta")):
        return source
    return ModelSource("timm", source.architecture, {**source.model_args, "global_pool": pool}, source.pretrained_cfg)


def _pool_type(model: nn.Module) -> str | None:
    """timm's global pooling setting: a string attribute, or the ``pool_type`` of its pooling module."""
    pool = getattr(model, "global_pool", None)
    pool = getattr(pool, "pool_type", pool)
    return pool if isinstance(pool, str) else None


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
        "intermediate_size": set(_slim_sizes(model, dense, _linear_out, config.get("intermediate_size"))),
        "hidden_size": set(_slim_sizes(model, dense, _layer_norm_width, config.get("hidden_size"))),
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


def layer_widths(model: nn.Module, source: ModelSource) -> dict[str, list[int]]:
    """Per layer, in order, the slim values of a transformers model's width fields (heads, MLP, hidden)."""
    dense, config = source.build("meta"), source.model_args
    heads = [family.head_attributes(module) for _, module, family in find_attention(model)]
    return {
        "num_attention_heads": [attributes["num_heads"] for attributes in heads],
        "head_dim": [attributes["head_dim"] for attributes in heads],
        "intermediate_size": _slim_sizes(model, dense, _linear_out, config.get("intermediate_size")),
        "hidden_size": _slim_sizes(model, dense, _layer_norm_width, config.get("hidden_size")),
    }


def _slim_sizes(model: nn.Module, dense: nn.Module, size_of: Callable[[nn.Module], int | None], dense_size: Any) -> list:
    """The sizes in ``model`` of the modules whose size is ``dense_size`` in ``dense``, in module order."""
    slim_modules = dict(model.named_modules())
    return [
        size_of(slim_modules[name])
        for name, module in dense.named_modules()
        if dense_size is not None and size_of(module) == dense_size and name in slim_modules
    ]


def _linear_out(module: nn.Module) -> int | None:
    return module.out_features if isinstance(module, nn.Linear) else None


def _layer_norm_width(module: nn.Module) -> int | None:
    return module.normalized_shape[-1] if isinstance(module, nn.LayerNorm) else None


def _plain_file_name(name: str) -> str:
    if os.path.basename(name) != name or name.startswith("."):
        raise ValueError(f"extra file name {name!r} must be a plain file name")
    return name


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Size | tuple):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
