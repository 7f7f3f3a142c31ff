"""The shape spec: a JSON-able record of a slim model's shapes, to rebuild it without pickles.

``export_shape_spec(slim)`` records, for every module whose shape can change, its
shape-defining attributes and the shapes of its parameters and buffers, plus attention head
counts and bare parameters (class token, positional embedding). ``apply_shape_spec(fresh, spec)``
reshapes a freshly built original model to match, after which the slim ``state_dict`` loads
strictly. Only names that exist in the fresh model are touched, and sizes are validated, so a
spec cannot reach outside the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hf_prune.structure.attention import find_attention
from hf_prune.structure.forward_fixes import fix_forwards
from hf_prune.structure.layer_kinds import layer_kind

SPEC_FORMAT = "hf_prune.shape_spec/1"


def _shape_attributes(module: nn.Module) -> tuple[str, ...] | None:
    kind = layer_kind(module)
    return None if kind is None else kind.shape_attributes


def _module_entry(module: nn.Module, attributes: tuple[str, ...]) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": type(module).__name__}
    for attr in attributes:
        value = getattr(module, attr)
        entry[attr] = list(value) if isinstance(value, tuple) else value
    entry["tensors"] = {
        name: list(t.shape) for name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if t is not None and t.dim() > 0
    }
    return entry


def export_shape_spec(model: nn.Module, reference: nn.Module | None = None) -> dict[str, Any]:
    """Record the shapes of ``model``.

    Args:
        model: the (pruned) model.
        reference: the unpruned architecture; when given, only entries that differ from it
            are recorded.
    """
    spec = _full_spec(model)
    if reference is not None:
        base = _full_spec(reference)
        for section in ("modules", "attention", "parameters"):
            spec[section] = {k: v for k, v in spec[section].items() if base[section].get(k) != v}
    return spec


def _full_spec(model: nn.Module) -> dict[str, Any]:
    modules = {}
    owned = set()
    for name, module in model.named_modules():
        attributes = _shape_attributes(module)
        if attributes is not None:
            modules[name] = _module_entry(module, attributes)
            owned |= {f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)}
    attention = {name: family.head_attributes(m) for name, m, family in find_attention(model)}
    parameters = {name: list(p.shape) for name, p in model.named_parameters() if name not in owned}
    return {"format": SPEC_FORMAT, "modules": modules, "attention": attention, "parameters": parameters}


class ShapeSpecError(ValueError):
    """A shape spec does not fit the model it is applied to."""


def apply_shape_spec(model: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
    """Reshape a freshly built original ``model`` in place to the shapes recorded in ``spec``.

    Parameters and buffers are replaced by uninitialized tensors of the recorded shapes (on the
    model's device, meta included); load the slim ``state_dict`` strictly afterwards.

    Raises:
        ShapeSpecError: unknown format, a name the model does not have, a type mismatch, or a
            size that is not a positive integer no larger than the original.
    """
    if spec.get("format") != SPEC_FORMAT:
        raise ShapeSpecError(f"unsupported shape spec format {spec.get('format')!r}: expected {SPEC_FORMAT!r}")
    modules = dict(model.named_modules())
    for name, entry in spec.get("modules", {}).items():
        _reshape_module(_lookup(modules, name, "module"), name, entry)
    params = dict(model.named_parameters())
    for name, shape in spec.get("parameters", {}).items():
        original = _lookup(params, name, "parameter")
        owner_name, _, attr = name.rpartition(".")
        setattr(modules[owner_name], attr, nn.Parameter(_empty_like(original, _sizes(shape, original.shape, name))))
    for module in model.modules():  # attributes derived from the reshaped children (MixNet's split sizes)
        if (kind := layer_kind(module)) is not None and kind.sync_shape is not None:
            kind.sync_shape(module)
    families = {name: family for name, _, family in find_attention(model)}
    for name in spec.get("attention", {}):
        if name not in families:
            raise ShapeSpecError(f"shape spec names attention module '{name}', which the model does not have")
        families[name].sync_num_heads(modules[name])
    fix_forwards(model)
    return model


def _lookup(named: Mapping[str, Any], name: str, what: str) -> Any:
    if not isinstance(name, str) or name not in named:
        raise ShapeSpecError(f"shape spec names {what} {name!r}, which the model does not have")
    return named[name]


def _sizes(values: Any, original: Any, where: str) -> list[int]:
    """Validate recorded sizes: positive integers, same rank, none larger than the original."""
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    original = list(original) if isinstance(original, (list, tuple, torch.Size)) else [original]
    ok = len(values) == len(original) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= o for v, o in zip(values, original)
    )
    if not ok:
        raise ShapeSpecError(f"shape spec gives {where} the sizes {values}; the original model has {original}")
    return values


def _reshape_module(module: nn.Module, name: str, entry: Mapping[str, Any]) -> None:
    attributes = _shape_attributes(module)
    if attributes is None or entry.get("type") != type(module).__name__:
        raise ShapeSpecError(f"shape spec says '{name}' is a {entry.get('type')}, the model has {type(module).__name__}")
    for attr in attributes:
        if attr in entry:
            value = _sizes(entry[attr], getattr(module, attr), f"{name}.{attr}")
            setattr(module, attr, tuple(value) if isinstance(getattr(module, attr), tuple) else value[0])
    tensors = dict([*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)])
    for tensor_name, shape in entry.get("tensors", {}).items():
        original = _lookup(tensors, tensor_name, f"tensor of '{name}'")
        new = _empty_like(original, _sizes(shape, original.shape, f"{name}.{tensor_name}"))
        if isinstance(original, nn.Parameter):
            setattr(module, tensor_name, nn.Parameter(new, requires_grad=original.requires_grad))
        else:
            setattr(module, tensor_name, new)


def _empty_like(original: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return torch.empty(shape, dtype=original.dtype, device=original.device)
