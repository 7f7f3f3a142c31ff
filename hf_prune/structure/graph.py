"""Coupled channel groups of a model, over torch-pruning's ``DependencyGraph``.

With ``group_sparsity.py`` (the Torch-Pruning peer's regularizer), this module is the only place
that talks to torch-pruning. It turns the library's dependency groups into plain descriptions
(:class:`ChannelGroup`): which tensors hold which channels of a group, in units that can be
removed (one channel, or one attention head). Methods score and choose units;
:meth:`StructureGraph.apply` removes them physically.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from hf_prune.structure.attention import AttentionFamily, find_attention
from hf_prune.models.forward import logits_of, run_model

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


class UnprunableLayerError(ValueError):
    """A layer sits in a pruning group but its tensors cannot be sliced safely."""


@dataclass(frozen=True)
class TensorSlice:
    """Where the units of a group live in one parameter.

    ``index[u]`` lists the positions along ``dim`` of ``param_name`` that belong to unit ``u``.
    ``produces`` is True for tensors that compute the channels (conv/linear output rows, norm
    affine parameters) and False for tensors that consume them (input columns).
    """

    param_name: str
    dim: int
    index: torch.Tensor
    produces: bool


@dataclass
class ChannelGroup:
    """Channels (or attention heads) of a model that must be removed together.

    Attributes:
        name: the root module's name; stable across prunes, used as the key of a plan.
        kind: ``"channel"`` or ``"head"``.
        num_units: how many units the group has now.
        slices: every parameter tensor the group touches.
        modules: names of the modules whose shapes the group changes.
    """

    name: str
    kind: str
    num_units: int
    slices: tuple[TensorSlice, ...]
    modules: tuple[str, ...]
    _root_indices: list[list[int]] = field(repr=False, default_factory=list)


def _tensor_dims(module: nn.Module, produces: bool) -> list[tuple[str, int]]:
    """(attribute, dim) of every parameter of ``module`` that a channel cut slices."""
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        if produces or depthwise:
            return [("weight", 1 if module.transposed else 0), ("bias", 0)]
        return [("weight", 0 if module.transposed else 1)]
    if isinstance(module, nn.Linear):
        return [("weight", 0), ("bias", 0)] if produces else [("weight", 1)]
    if isinstance(module, _NORM_TYPES):
        return [("weight", 0), ("bias", 0)]
    if isinstance(module, nn.LayerNorm):
        return [("weight", -1), ("bias", -1)]
    if isinstance(module, nn.PReLU):
        return [("weight", 0)] if module.num_parameters > 1 else []
    raise UnprunableLayerError(type(module).__name__)


def _grouped_conv_names(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups and not m.groups == m.in_channels == m.out_channels
    ]


class StructureGraph:
    """The prunable structure of a model at one moment.

    Build it again after every physical prune (``apply`` does not update it): the groups then
    describe the slimmer model, with the same group names.

    Args:
        model: a timm or transformers vision model (or any ``nn.Module``).
        example_inputs: a small batch (e.g. ``torch.randn(1, 3, 32, 32)``) used to trace the graph.
        ignored_layers: module names whose shapes must not change; every group touching them is
            left out. The classifier (``get_classifier()`` or the last Linear) always keeps its
            number of classes, but the group feeding it is prunable: it loses input columns.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] = ()) -> None:
        self.model = model
        self._names = {m: n for n, m in model.named_modules()}
        self._param_names = {p: n for n, p in model.named_parameters()}
        modules = dict(model.named_modules())
        unknown = [n for n in ignored_layers if n not in modules]
        if unknown:
            raise ValueError(f"ignored_layers names modules that the model does not have: {unknown}")
        self.classifier_name = classifier_name(model)
        self._classifier = modules[self.classifier_name]
        self.ignored = {modules[n] for n in ignored_layers}
        self.ignored |= {modules[n] for n in _grouped_conv_names(model)}
        self._attention = {m: (name, family) for name, m, family in find_attention(model)}
        self._head_projection = {
            proj: attn for attn, (_, family) in self._attention.items() for proj in family.head_projections(attn)
        }
        self._dg = self._trace(example_inputs)
        self.groups = self._collect_groups()

    def _trace(self, example_inputs: Any) -> tp.DependencyGraph:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                # torch-pruning warns about every unwrapped parameter (pos/cls embeddings).
                warnings.simplefilter("ignore", UserWarning)
                return tp.DependencyGraph().build_dependency(
                    self.model,
                    example_inputs,
                    forward_fn=lambda m, x: logits_of(run_model(m, x)),
                    ignored_layers=[],
                    verbose=False,
                )
        finally:
            self.model.train(was_training)

    def _collect_groups(self) -> list[ChannelGroup]:
        groups = []
        for tp_group in self._dg.get_all_groups(ignored_layers=[], root_module_types=(nn.Conv2d, nn.Conv1d, nn.Linear)):
            group = self._describe(tp_group)
            if group is not None:
                groups.append(group)
        return groups

    def _describe(self, tp_group: tp.Group) -> ChannelGroup | None:
        """Translate one torch-pruning group, or None when it must stay whole."""
        root = tp_group[0].dep.target.module
        attention = self._head_projection.get(root)
        members, touched = [], []
        for item in tp_group:
            target = item.dep.target.module
            produces = self._dg.is_out_channel_pruning_fn(item.dep.handler)
            if isinstance(target, nn.Parameter):
                members.append((self._param_names[target], self._dg.module2node[target].pruning_dim, item, produces))
                continue
            if not isinstance(target, nn.Module) or target not in self._names:
                continue  # torch-pruning's virtual ops: add, cat, reshape, ...
            if target in self.ignored or self._feeds_attention(target, produces) or (target is self._classifier and produces):
                return None  # only the classifier's output (the classes) is fixed; its input columns may go
            touched.append(self._names[target])
            try:
                dims = _tensor_dims(target, produces)
            except UnprunableLayerError:
                raise self._unprunable(target) from None
            for attr, dim in dims:
                if isinstance(getattr(target, attr, None), nn.Parameter):
                    members.append((f"{self._names[target]}.{attr}" if self._names[target] else attr, dim, item, produces))
        unit_of_root = self._unit_mapping(root, attention)
        num_units = len(set(unit_of_root(i) for i in tp_group[0].root_idxs))
        slices = tuple(
            TensorSlice(name, dim, _index_by_unit(item.idxs, item.root_idxs, unit_of_root, num_units), produces)
            for name, dim, item, produces in members
        )
        root_indices = [[] for _ in range(num_units)]
        for i in tp_group[0].root_idxs:
            root_indices[unit_of_root(i)].append(i)
        return ChannelGroup(
            name=self._names[root],
            kind="head" if attention is not None else "channel",
            num_units=num_units,
            slices=slices,
            modules=tuple(dict.fromkeys(touched)),
            _root_indices=root_indices,
        )

    def _feeds_attention(self, module: nn.Module, produces: bool) -> bool:
        """True for the transformer residual stream: it feeds a head projection's input."""
        return module in self._head_projection and not produces

    def _unit_mapping(self, root: nn.Module, attention: nn.Module | None):
        if attention is None:
            return lambda i: i
        family: AttentionFamily = self._attention[attention][1]
        return lambda i: family.head_of_channel(attention, root, i)

    def _unprunable(self, module: nn.Module) -> UnprunableLayerError:
        name = self._names[module]
        return UnprunableLayerError(
            f"Layer '{name}' ({type(module).__name__}) shares channels with prunable layers, but the structure "
            f"engine does not know how to slice its parameters. Pass ignored_layers=['{name}'] to keep its "
            "channels (every group touching it is then left unpruned)."
        )

    def name_of(self, module: nn.Module) -> str:
        """The module's name in the model."""
        return self._names[module]

    def apply(self, keep: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """Physically remove every unit not listed in ``keep[group_name]``.

        Groups absent from ``keep`` are left whole; attention head counts are fixed afterwards.
        The graph is stale after this call: build a new one for the slimmer model.

        Returns:
            For every parameter name, a tensor shaped like the new parameter holding the flat
            index of the old element each new element came from: what optimizer state (momentum,
            Adam moments) needs to follow the weights exactly.
        """
        removals = self._removed_root_indices(keep)
        params = dict(self.model.named_parameters())
        values = {name: p.data for name, p in params.items()}
        # Prune tensors of element positions instead of values (float64 counts exactly to 2**53):
        # torch-pruning slices them like the weights, and then every kept element is traceable.
        for p in params.values():
            p.data = torch.arange(p.numel(), dtype=torch.float64, device=p.device).view(p.shape)
        try:
            modules = dict(self.model.named_modules())
            for name, removed in removals.items():
                pruner = self._dg.get_pruner_of_module(modules[name])
                self._dg.get_pruning_group(modules[name], pruner.prune_out_channels, removed).prune(record_history=False)
        finally:
            index_maps = {}
            for name, p in self.model.named_parameters():
                index_maps[name] = p.data.long()
                p.data = values[name].flatten()[index_maps[name].flatten()].view(p.shape)
        for attention, (_, family) in self._attention.items():
            family.sync_num_heads(attention)
        return index_maps

    def _removed_root_indices(self, keep: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        by_name = {g.name: g for g in self.groups}
        unknown = set(keep) - set(by_name)
        if unknown:
            raise KeyError(f"plan names groups this graph does not have: {sorted(unknown)}")
        removals = {}
        for name, kept_units in keep.items():
            group, kept = by_name[name], set(kept_units)
            if not kept or not kept <= set(range(group.num_units)):
                raise ValueError(f"plan for group '{name}' must keep between 1 and {group.num_units} valid units")
            removed = [i for u in range(group.num_units) if u not in kept for i in group._root_indices[u]]
            if removed:
                removals[name] = removed
        return removals


def _index_by_unit(idxs, root_idxs, unit_of_root, num_units: int) -> torch.Tensor:
    """Arrange a member's indices as a (num_units, per_unit) tensor."""
    rows: list[list[int]] = [[] for _ in range(num_units)]
    for i, r in zip(idxs, root_idxs):
        rows[unit_of_root(r)].append(int(i))
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        # Unequal fan-out (e.g. a channel feeding a flatten of varying size) cannot be tabulated.
        raise UnprunableLayerError("a group maps units to unequal numbers of channels")
    return torch.tensor(rows, dtype=torch.long)


def classifier_name(model: nn.Module) -> str:
    """Name of the module producing the class logits (never pruned on its output side)."""
    names = {m: n for n, m in model.named_modules()}
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier) and isinstance(get_classifier(), nn.Module) and get_classifier() in names:
        return names[get_classifier()]
    if hasattr(model, "classifier") and isinstance(model.classifier, nn.Module):
        linears = [m for m in model.classifier.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if linears:
            return names[linears[-1]]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("cannot find the classifier layer: pass it in ignored_layers")
    return linears[-1]
