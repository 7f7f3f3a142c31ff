"""Coupled channel groups of a model, over torch-pruning's ``DependencyGraph``.

With ``group_sparsity.py`` (the Torch-Pruning peer's regularizer), this module is the only place
that talks to torch-pruning. It turns the library's dependency groups into plain descriptions
(:class:`ChannelGroup`): which tensors hold which channels of a group, in units that can be
removed (one channel, one attention head, or one group of a grouped convolution or GroupNorm).
Methods score and choose units; :meth:`StructureGraph.apply` removes them physically.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch_pruning.dependency.index_mapping import _GQAIndexMapping as _GroupedQueryMapping
from torch_pruning.dependency.index_mapping import update_split_index_mapping
from torch import nn
from transformers.utils import logging

from hf_prune.structure.attention import AttentionFamily, find_attention, head_linears
from hf_prune.structure.forward_fixes import fix_forwards
from hf_prune.models.forward import logits_of, run_model
from hf_prune.structure.layer_kinds import is_channel_coupled_conv, layer_kind

logger = logging.get_logger(__name__)


class UnprunableLayerError(ValueError):
    """A layer sits in a pruning group but its tensors cannot be sliced safely.

    Attributes:
        ignored_layers: the ``ignored_layers`` that make the model prunable (empty when none do).
    """

    def __init__(self, message: str, ignored_layers: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.ignored_layers = list(ignored_layers)


class _UnknownAttentionError(Exception):
    """A group reaches into an attention module of no known family: the group is kept whole."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _UnequalUnitsError(ValueError):
    """A group's units hold unequal numbers of channels in some tensor."""


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
    """(attribute, dim) of every parameter of ``module`` that a channel cut slices.

    Raises:
        UnprunableLayerError: an unknown layer type, or one with per-channel parameters its kind
            does not slice (e.g. the ``gain`` of timm's ``ScaledStdConv2d``).
    """
    kind = layer_kind(module)
    if kind is None:
        raise UnprunableLayerError(type(module).__name__)
    sliced = {attr for side in (True, False) for attr, _ in kind.sliced_tensors(module, side)}
    if any(name not in sliced and p.numel() > 1 for name, p in module.named_parameters(recurse=False)):
        raise UnprunableLayerError(type(module).__name__)
    return kind.sliced_tensors(module, produces)


def _is_whole_group_conv(module: nn.Module) -> bool:
    """A grouped (not depthwise) convolution that is pruned by whole groups."""
    return (isinstance(module, nn.modules.conv._ConvNd) and is_channel_coupled_conv(module)
            and module.groups < module.out_channels)


def _channels_per_group(module: Any) -> int | None:
    """Channels per group of a layer that loses whole groups (grouped conv, GroupNorm), else None."""
    if isinstance(module, nn.Module) and _is_whole_group_conv(module):
        return module.out_channels // module.groups
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return module.num_channels // module.num_groups
    return None


def _is_unsliceable_conv(module: nn.Module) -> bool:
    """A grouped convolution whose input and output channels differ: its channels stay."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and not is_channel_coupled_conv(module)


class StructureGraph:
    """The prunable structure of a model at one moment.

    Build it again after every physical prune (``apply`` does not update it): the groups then
    describe the slimmer model, with the same group names.

    Args:
        model: a timm or transformers vision model (or any ``nn.Module``).
        example_inputs: a small batch (e.g. ``torch.randn(1, 3, 32, 32)``) used to trace the graph.
        ignored_layers: module names whose shapes must not change; every group touching them is
            left out. The classifiers (see :func:`classifier_names`) always keep their number of
            classes, but the group feeding them is prunable: they lose input columns.

    Attributes:
        groups: the prunable groups.
        kept_attention: names of the attention modules of no known family (no entry in
            :func:`~hf_prune.structure.attention.attention_families`); every group reaching their
            layers is left whole, so their heads and widths stay (a warning says so).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] = ()) -> None:
        self.model = model
        self._names = {m: n for n, m in model.named_modules()}
        self._param_names = {p: n for n, p in model.named_parameters()}
        modules = dict(model.named_modules())
        unknown = [n for n in ignored_layers if n not in modules]
        if unknown:
            raise ValueError(f"ignored_layers names modules that the model does not have: {unknown}")
        self.classifiers = {modules[n] for n in classifier_names(model)}
        self.ignored = {modules[n] for n in ignored_layers}
        unsliceable = {m for m in model.modules() if _is_unsliceable_conv(m)}
        self.ignored |= unsliceable
        # Their outputs stay; their inputs lose the same position in every group (ResNeSt's split attention).
        # With one input per group (GhostNet's cheap operation) that would empty the conv: kept whole.
        self._grouped_inputs = {m for m in unsliceable if not m.transposed and m.in_channels > m.groups}
        self._attention = {m: (name, family) for name, m, family in find_attention(model)}
        self._head_projection = {
            proj: attn for attn, (_, family) in self._attention.items() for proj in family.head_projections(attn)
        }
        self._head_parameters = {
            attn: [(f"{name}.{param}", dim) for param, dim in family.head_parameters(attn)]
            for attn, (name, family) in self._attention.items()
        }
        self._head_consumers = {
            attn: family.head_consumers(attn) for attn, (_, family) in self._attention.items()
        }
        # One output per head (Swinv2's bias MLP): sliced with the heads, never by torch-pruning.
        self._head_linears = {linear for attn, (_, family) in self._attention.items()
                              for linear in head_linears(attn, family)}
        self._unknown_attention = _unknown_attention_layers(model, self._attention)
        self._stops_groups = self.fixed_layers | self._head_linears
        self._owner_of_part = _split_parts(model)
        self._dg = self._trace(example_inputs)
        self._part_splits = {op: self._owner_of_part[node.outputs[0].module]
                             for op, node in self._dg.module2node.items() if self._splits_into_parts(node)}
        self.groups, self.kept_attention = self._collect_groups()
        if self.kept_attention:
            self._warn_kept_attention()

    @property
    def fixed_layers(self) -> set[nn.Module]:
        """Layers whose shapes never change: the ignored ones and those inside attention kept whole."""
        return self.ignored | set(self._unknown_attention)

    def _trace(self, example_inputs: Any) -> tp.DependencyGraph:
        params = dict(self.model.named_parameters())
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad(), warnings.catch_warnings(), contextlib.ExitStack() as tracing:
                # torch-pruning warns about every unwrapped parameter (pos/cls embeddings).
                warnings.simplefilter("ignore", UserWarning)
                for attention, (_, family) in self._attention.items():
                    tracing.enter_context(family.tracing(attention))
                graph = _build_dependency_graph(
                    self.model,
                    example_inputs,
                    forward_fn=lambda m, x: logits_of(run_model(m, x)),
                    ignored_layers=[],
                    # Per-head tables are sliced by head here, not by channel in torch-pruning.
                    ignored_params=[params[name] for entries in self._head_parameters.values() for name, _ in entries],
                    verbose=False,
                )
        finally:
            self.model.train(was_training)
        for module, node in graph.module2node.items():
            if isinstance(module, nn.Module) and _is_whole_group_conv(module):
                _couple_input_and_output(graph, node)
            if node.type == tp.ops.OPTYPE.EXPAND:
                _drop_grouped_query_mapping(node)
            if self._splits_into_parts(node):
                self._map_pieces_to_parts(graph, node)
            cut = node.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE) and not self._splits_into_parts(node)
            if cut or module in self._stops_groups:
                # A group reaching a split (other than into parts), slice, ignored layer or unknown attention is
                # kept whole or refused (_describe): stop the search there. Past a split or slice, every partial
                # channel subset is a new search state: chains of them (ReXNet's partial residuals,
                # FocalNet's gates) took torch-pruning minutes.
                node.dependencies = []
        return graph

    def _splits_into_parts(self, node: Any) -> bool:
        """A split whose every piece feeds one part conv of the same splitting module (MixNet's MixedConv2d)."""
        owners = {self._owner_of_part.get(out.module) for out in node.outputs}
        return node.type == tp.ops.OPTYPE.SPLIT and len(owners) == 1 and None not in owners

    def _map_pieces_to_parts(self, graph: tp.DependencyGraph, node: Any) -> None:
        """Map piece ``i`` of a split into parts to part conv ``i``.

        torch-pruning numbers a split's pieces in the order it found their consumers, which need
        not be the split's (MixNet's residual stream landed on the wrong part).
        """
        owner = self._owner_of_part[node.outputs[0].module]
        order = {part: i for i, part in enumerate(owner.children())}
        node.outputs.sort(key=lambda out: order[out.module])
        update_split_index_mapping(graph, node)

    def _collect_groups(self) -> tuple[list[ChannelGroup], list[str]]:
        """The prunable groups, and the attention modules of no known family that groups reached (kept whole)."""
        groups, kept_attention = [], set()
        for tp_group in self._dg.get_all_groups(ignored_layers=[], root_module_types=(nn.Conv2d, nn.Conv1d, nn.Linear)):
            try:
                group = self._describe(tp_group)
            except _UnknownAttentionError as err:
                kept_attention.add(err.name)
                continue
            if group is not None:
                groups.append(group)
        return groups, [name for name, _ in self.model.named_modules() if name in kept_attention]

    def _describe(self, tp_group: tp.Group) -> ChannelGroup | None:
        """Translate one torch-pruning group, or None when it must stay whole."""
        root = tp_group[0].dep.target.module
        attention = self._head_projection.get(root)
        if root in self._head_linears:
            return None
        members, touched = [], []
        for item in tp_group:
            target = item.dep.target.module
            produces = self._dg.is_out_channel_pruning_fn(item.dep.handler)
            if target in self._head_linears:
                if produces and attention is not None:
                    continue  # its rows go with the heads, as a head parameter
                return None
            if isinstance(target, nn.Parameter):
                members.append((self._param_names[target], self._dg.module2node[target].pruning_dim, item, produces))
                continue
            if target in self._part_splits:
                continue  # its sizes follow the part convs' widths (sync_shape); the parts are tied in _units
            if isinstance(target, (tp.ops._SplitOp, tp.ops._SliceOp)):
                if attention is not None and self._head_consumers[attention]:
                    continue  # q, k, v split apart inside each head; the consumers are added below
                return None  # split sizes and slice bounds are often constants (MixNet, Res2Net, DPN): kept whole
            if not isinstance(target, nn.Module) or target not in self._names:
                continue  # torch-pruning's virtual ops: add, cat, reshape, ...
            if _mixes_another_dim(target, item.idxs, produces):
                continue
            if target in self._grouped_inputs and not produces:
                touched.append(self._names[target])
                members.append((f"{self._names[target]}.weight", 1, item, produces))
                continue
            if target in self.ignored or self._feeds_attention(target, produces):
                return None
            if target in self.classifiers and produces:
                return None  # only the classifiers' outputs (the classes) are fixed; their input columns may go
            if target in self._unknown_attention:
                raise _UnknownAttentionError(self._unknown_attention[target])
            touched.append(self._names[target])
            try:
                dims = _tensor_dims(target, produces)
            except UnprunableLayerError:
                raise self._unprunable(target) from None
            for attr, dim in dims:
                if isinstance(getattr(target, attr, None), nn.Parameter):
                    members.append((f"{self._names[target]}.{attr}" if self._names[target] else attr, dim, item, produces))
        try:
            unit_of_root, slices = self._tabulate(tp_group, root, attention, members, shared=[])
        except _UnequalUnitsError:
            # torch-pruning lists a channel reached from two roots once, under one of them: follow the
            # members' channels back to the root to find such shared channels (GhostNet's cheap copies).
            try:
                unit_of_root, slices = self._tabulate(tp_group, root, attention, members, self._shared_channels(tp_group))
            except _UnequalUnitsError:
                return None  # e.g. channels split into unequal chunks (Res2Net, MixNet): kept whole
        num_units = len(set(unit_of_root.values()))
        if attention is not None:
            for name, dim in self._head_parameters[attention]:  # one slice or one equal block per head
                per_head = torch.arange(self.model.get_parameter(name).shape[dim]).view(num_units, -1)
                slices.append(TensorSlice(name, dim, per_head, False))
            for consumer in self._head_consumers[attention]:
                columns = torch.arange(consumer.weight.shape[1]).view(num_units, -1)  # one block per head
                slices.append(TensorSlice(f"{self._names[consumer]}.weight", 1, columns, False))
                touched.append(self._names[consumer])
        root_indices = [[] for _ in range(num_units)]
        for i in tp_group[0].root_idxs:
            root_indices[unit_of_root[int(i)]].append(int(i))
        return ChannelGroup(
            name=self._names[root],
            kind="head" if attention is not None else "channel",
            num_units=num_units,
            slices=tuple(slices),
            modules=tuple(dict.fromkeys(touched)),
            _root_indices=root_indices,
        )

    def _member_index(self, item: Any, unit_of_root: dict[int, int], num_units: int) -> torch.Tensor:
        """A member's indices by unit; a grouped conv's input columns are positions within one group."""
        target = item.dep.target.module
        if target in self._grouped_inputs:
            per_group = target.in_channels // target.groups
            local = [int(i) % per_group for i in item.idxs]
            return _index_by_unit(local, item.root_idxs, unit_of_root, num_units)
        return _index_by_unit(item.idxs, item.root_idxs, unit_of_root, num_units)

    def _feeds_attention(self, module: nn.Module, produces: bool) -> bool:
        """True for the transformer residual stream: it feeds a head projection's input."""
        return module in self._head_projection and not produces

    def _tabulate(self, tp_group: tp.Group, root: nn.Module, attention: nn.Module | None,
                  members: list[tuple[str, int, Any, bool]],
                  shared: list[tuple[Any, int]]) -> tuple[dict[int, int], list[TensorSlice]]:
        """The unit of every root index, and each member's slice arranged by unit."""
        unit_of_root = self._units(tp_group, root, attention, shared)
        num_units = len(set(unit_of_root.values()))
        slices = [
            TensorSlice(name, dim, self._member_index(item, unit_of_root, num_units), produces)
            for name, dim, item, produces in members
        ]
        return unit_of_root, slices

    def _channel_owners(self, tp_group: tp.Group) -> list[tuple[Any, int]]:
        """``(channel, root index)`` for every channel of a layer or parameter the group lists."""
        return [((item.dep.target.module, self._dg.is_out_channel_pruning_fn(item.dep.handler), int(i)), int(r))
                for item in tp_group if self._is_tensor_owner(item.dep.target.module)
                for i, r in zip(item.idxs, item.root_idxs)]

    def _shared_channels(self, tp_group: tp.Group) -> list[tuple[Any, int]]:
        """``(channel, root index)`` for every root index each member channel reaches.

        The group of a member's channels lists every root index once, under the channel reaching
        it, also where the root's group listed that channel under only one of its roots.
        """
        root, root_fn = tp_group[0].dep.target.module, tp_group[0].dep.handler
        num_roots = len(tp_group[0].root_idxs)
        pairs = self._channel_owners(tp_group)
        for item in list(tp_group)[1:]:
            member = item.dep.target.module
            if not self._is_tensor_owner(member) or len({int(r) for r in item.root_idxs}) == num_roots:
                continue  # a member listing every root index hides no root behind a shared channel
            produces = self._dg.is_out_channel_pruning_fn(item.dep.handler)
            back = self._dg.get_pruning_group(member, item.dep.handler, sorted({int(i) for i in item.idxs}))
            pairs += [((member, produces, int(m)), int(r)) for b in back
                      if b.dep.target.module is root and b.dep.handler == root_fn
                      for r, m in zip(b.idxs, b.root_idxs)]
        return pairs

    def _is_tensor_owner(self, target: Any) -> bool:
        """A layer or parameter of the model, not one of torch-pruning's virtual ops."""
        return target in self._names or target in self._param_names

    def _units(self, tp_group: tp.Group, root: nn.Module, attention: nn.Module | None,
               shared: list[tuple[Any, int]]) -> dict[int, int]:
        """The unit of every root index: one channel, or every channel of one head or one conv group.

        Root indices that share a head, a group of a grouped convolution or GroupNorm anywhere in
        the torch-pruning group, the same position of the part convs of one splitting module (so its
        parts keep equal widths), or one channel listed in ``shared`` (``(channel, root index)``
        pairs; GhostNet: a channel and its cheap depthwise copy, concatenated, come from one primary
        channel) are tied together (union-find); units are numbered in root order.
        """
        roots = [int(r) for r in tp_group[0].root_idxs]
        parent = {r: r for r in roots}

        def find(r: int) -> int:
            while parent[r] != r:
                parent[r] = parent[parent[r]]
                r = parent[r]
            return r

        first_with_key: dict[Any, int] = {}

        def tie(key: Any, r: int) -> None:
            parent[find(r)] = find(first_with_key.setdefault(key, r))

        if attention is not None:
            family: AttentionFamily = self._attention[attention][1]
            for r in roots:
                tie(("head", family.head_of_channel(attention, root, r)), r)
        for item in tp_group:
            layer = item.dep.target.module
            per_group = _channels_per_group(layer)
            for i, r in zip(item.idxs, item.root_idxs) if per_group else ():
                tie((layer, int(i) // per_group), int(r))
            if layer in self._grouped_inputs:  # reached only on its input side
                per_group = layer.in_channels // layer.groups
                for i, r in zip(item.idxs, item.root_idxs):
                    tie((layer, int(i) % per_group), int(r))
            owner = self._owner_of_part.get(layer)
            for i, r in zip(item.idxs, item.root_idxs) if owner is not None else ():
                tie((owner, int(i)), int(r))
        for channel, r in shared:
            tie(channel, r)
        unit_ids: dict[int, int] = {}
        return {r: unit_ids.setdefault(find(r), len(unit_ids)) for r in roots}

    def _warn_kept_attention(self) -> None:
        """Say once (per message) which attention layers keep their heads because no family knows them."""
        logger.warning_once(
            f"{len(self.kept_attention)} attention layer(s) of a kind the structure engine does not know "
            f"({', '.join(attention_kinds(self.model, self.kept_attention))}; first: '{self.kept_attention[0]}') "
            "are kept whole: their heads and the channels of their projections stay, the rest of the model is "
            "pruned. Pruning their heads needs an AttentionFamily in hf_prune/structure/attention.py."
        )

    def _unprunable(self, module: nn.Module) -> UnprunableLayerError:
        name = self._names[module]
        return UnprunableLayerError(
            f"Layer '{name}' ({type(module).__name__}) shares channels with prunable layers, but the structure "
            f"engine does not know how to slice its parameters. Pass ignored_layers=['{name}'] to keep its "
            "channels (every group touching it is then left unpruned).",
            ignored_layers=[name],
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
        by_name = {g.name: g for g in self.groups}
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
                self._prune(self._dg.get_pruning_group(modules[name], pruner.prune_out_channels, removed))
                attention = self._head_projection.get(modules[name])
                for param_name, dim in self._head_parameters.get(attention, []):
                    _keep_head_entries(self.model, param_name, dim, sorted(keep[name]), by_name[name].num_units)
                for consumer in self._head_consumers.get(attention, ()):
                    _keep_head_columns(consumer, sorted(keep[name]), by_name[name].num_units)
        finally:
            index_maps = {}
            for name, p in self.model.named_parameters():
                index_maps[name] = p.data.long()
                p.data = values[name].flatten()[index_maps[name].flatten()].view(p.shape)
        for attention, (_, family) in self._attention.items():
            family.sync_num_heads(attention)
        for module in self.model.modules():
            if (kind := layer_kind(module)) is not None and kind.sync_shape is not None:
                kind.sync_shape(module)
        fix_forwards(self.model)
        return index_maps

    def _prune(self, tp_group: tp.Group) -> None:
        """Torch-pruning's ``Group.prune``, except that grouped convolutions and GroupNorms lose whole groups."""
        regular = type(tp_group)()
        regular._DG = self._dg
        whole_groups, grouped_inputs, extra_outputs = [], [], []
        for item in tp_group:
            target = item.dep.target.module
            produces = self._dg.is_out_channel_pruning_fn(item.dep.handler)
            if target in self._head_linears:
                continue  # sliced with its heads in apply
            if target in self._grouped_inputs:
                grouped_inputs.append((target, item.idxs))
                continue
            if isinstance(target, nn.Module) and _is_whole_group_conv(target):
                if produces:
                    whole_groups.append((target, item.idxs))
                continue
            if _mixes_another_dim(target, item.idxs, produces):
                continue
            regular.add_dep(item.dep, item.idxs)
            if produces and isinstance(target, (nn.modules.conv._ConvNd, nn.Linear)):
                extra_outputs += [(target, attr, item.idxs) for attr in _outputs_torch_pruning_leaves(target)]
        norms = {item.dep.target.module for item in regular if isinstance(item.dep.target.module, nn.GroupNorm)}
        norm_group_width = {norm: _channels_per_group(norm) for norm in norms}
        kept_outputs = [(module, attr, _complement(getattr(module, attr).shape[0], removed))
                        for module, attr, removed in extra_outputs]
        regular.prune(record_history=False)
        for split, owner in self._part_splits.items():
            # The next group's index mapping reads these; torch-pruning leaves the offsets stale.
            split.split_sizes = [part.in_channels for part in owner.children()]
            split.offsets = list(itertools.accumulate(split.split_sizes, initial=0))
        for conv, removed in whole_groups:
            _remove_conv_channels(conv, removed)
        for conv, removed in grouped_inputs:
            _remove_grouped_conv_inputs(conv, removed)
        for module, attr, kept in kept_outputs:
            _slice_parameter(module, attr, 0, kept)
        for norm, per_group in norm_group_width.items():
            if per_group is not None:  # torch-pruning keeps num_groups; whole groups went
                norm.num_groups = norm.num_channels // per_group

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


class _TokenConcatGraph(tp.DependencyGraph):
    """Torch-pruning's graph, with concats along the tokens passing channels through unchanged.

    Torch-pruning marks a concat fed by a 3-d token parameter (a class token) as not along the
    channels, but still infers its channel sizes, and that inference indexes a split's pieces by
    the split's consumers: CvT's class token, split off and concatenated to q, k and v, overran
    it (IndexError). Such a concat is elementwise for the channels, and is traced as one.
    """

    def _trace(self, *args: Any, **kwargs: Any) -> dict:
        module2node = super()._trace(*args, **kwargs)
        for node in module2node.values():
            if node.type == tp.ops.OPTYPE.CONCAT and not node.enable_index_mapping:
                node.type = tp.ops.OPTYPE.ELEMENTWISE  # its pruner (a concat's) keeps no sizes: a no-op
        return module2node


# Modules whose forward splits their input by stored sizes, one piece per child conv, and
# concatenates the outputs; their layer kind's sync_shape derives the sizes from the children.
_CHANNEL_SPLITTERS = ("timm.layers.mixed_conv2d.MixedConv2d",)


def _split_parts(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """Part conv -> its :data:`_CHANNEL_SPLITTERS` module."""
    return {
        part: m for m in model.modules() if f"{type(m).__module__}.{type(m).__name__}" in _CHANNEL_SPLITTERS
        for part in m.children()
    }


def _build_dependency_graph(model: nn.Module, example_inputs: Any, **kwargs: Any) -> tp.DependencyGraph:
    """Torch-pruning's graph; its failures (not the model's own) become an :class:`UnprunableLayerError`."""
    with torch.no_grad():
        run_model(model, example_inputs)  # a model that does not run is not torch-pruning's failure
    try:
        return _TokenConcatGraph().build_dependency(model, example_inputs, **kwargs)
    except (AssertionError, TypeError, ValueError, IndexError, KeyError, RuntimeError) as err:
        raise UnprunableLayerError(
            f"torch-pruning cannot trace the channel dependencies of this {type(model).__name__} "
            f"({type(err).__name__}: {err}); the structure engine cannot prune it."
        ) from err


def _mixes_another_dim(module: Any, idxs: Sequence[int], produces: bool) -> bool:
    """A Linear that the group reaches through a transpose, and whose features are not its channels.

    torch-pruning passes channels through a transpose as if it were elementwise. A Linear applied
    to a transposed tensor (MLP-Mixer's and ResMLP's token mixing) mixes another dimension, along
    which the group's channels are a batch dimension: its shape stays. The group's indices then
    run past its features, which is how it shows; a token count at or above the width hides it
    (the pruned model then fails at its first forward).
    """
    if not isinstance(module, nn.Linear):
        return False
    return max(map(int, idxs), default=-1) >= (module.out_features if produces else module.in_features)


def _couple_input_and_output(graph: tp.DependencyGraph, node: Any) -> None:
    """Make removing input channels of a grouped convolution remove the same output channels, and back."""
    pruner = graph.get_pruner_of_module(node.module)
    node.dependencies += [
        tp.dependency.Dependency(pruner.prune_in_channels, pruner.prune_out_channels, source=node, target=node),
        tp.dependency.Dependency(pruner.prune_out_channels, pruner.prune_in_channels, source=node, target=node),
    ]


def _drop_grouped_query_mapping(node: Any) -> None:
    """Pass channels through an expand unchanged instead of by torch-pruning's grouped-query rule.

    That rule reads any 5-d expand as language models' ``repeat_kv`` (no vision model here has
    grouped-query attention); on others (``repeat_interleave`` in GCViT, Hiera) it divides by zero.
    """
    node.enable_index_mapping = False  # update_index_mapping then leaves these dependencies alone
    incoming = [dep for source in node.inputs for dep in source.dependencies if dep.target is node]
    for dep in [*node.dependencies, *incoming]:
        if isinstance(dep.index_mapping[0], _GroupedQueryMapping):
            dep.index_mapping[0] = None


def _outputs_torch_pruning_leaves(module: nn.Module) -> list[str]:
    """Per-output-channel parameters of a conv or linear beyond torch-pruning's weight and bias (a ``gain``)."""
    kind = layer_kind(module)
    sliced = kind.sliced_tensors(module, True) if kind is not None else []
    return [attr for attr, _ in sliced
            if attr not in ("weight", "bias") and isinstance(getattr(module, attr, None), nn.Parameter)]


def _keep_head_columns(consumer: nn.Linear | nn.Conv2d, kept_heads: Sequence[int], num_heads: int) -> None:
    """Keep the input columns of ``consumer`` that read the kept heads (one equal block per head)."""
    per_head = consumer.weight.shape[1] // num_heads
    _slice_parameter(consumer, "weight", 1, [h * per_head + j for h in kept_heads for j in range(per_head)])
    width = len(kept_heads) * per_head
    if isinstance(consumer, nn.Linear):
        consumer.in_features = width
    else:
        consumer.in_channels = width


def _keep_head_entries(model: nn.Module, param_name: str, dim: int, kept_heads: Sequence[int],
                       num_heads: int) -> None:
    """Keep the entries of a head parameter along ``dim`` that belong to the kept heads (one equal block per head)."""
    per_head = model.get_parameter(param_name).shape[dim] // num_heads
    _slice_parameter(model, param_name, dim, [h * per_head + j for h in kept_heads for j in range(per_head)])


def _complement(size: int, removed: Sequence[int]) -> list[int]:
    gone = {int(i) for i in removed}
    return [i for i in range(size) if i not in gone]


def _remove_conv_channels(conv: nn.modules.conv._ConvNd, removed: Sequence[int]) -> None:
    """Remove whole groups (given as their channels) of a grouped convolution: fewer groups, same width each."""
    per_group = conv.out_channels // conv.groups
    kept = _complement(conv.out_channels, removed)
    conv.in_channels = conv.out_channels = len(kept)
    conv.groups = len(kept) // per_group
    _slice_parameter(conv, "weight", 0, kept)  # (out, in / groups, ...) or, transposed, (in, out / groups, ...)
    if conv.bias is not None:
        _slice_parameter(conv, "bias", 0, kept)


def _remove_grouped_conv_inputs(conv: nn.modules.conv._ConvNd, removed: Sequence[int]) -> None:
    """Remove input channels of a grouped convolution: the same positions from every group."""
    per_group = conv.in_channels // conv.groups
    kept = _complement(per_group, [int(i) % per_group for i in removed])
    _slice_parameter(conv, "weight", 1, kept)  # (out, in / groups, ...)
    conv.in_channels = len(kept) * conv.groups


def _slice_parameter(owner: nn.Module, name: str, dim: int, kept: Sequence[int]) -> None:
    """Replace parameter ``name`` (dotted, below ``owner``) by its ``kept`` positions along ``dim``."""
    module_name, _, attr = name.rpartition(".")
    module = owner.get_submodule(module_name)
    old = getattr(module, attr)
    index = torch.as_tensor(list(kept), dtype=torch.long, device=old.device)
    setattr(module, attr, nn.Parameter(old.data.index_select(dim, index), requires_grad=old.requires_grad))


_HEAD_COUNT_ATTRIBUTES = ("num_heads", "num_attention_heads")


def _unknown_attention_layers(model: nn.Module, known: Mapping[nn.Module, Any]) -> dict[nn.Module, str]:
    """Conv/linear layers inside attention modules of no known family -> that module's name.

    An attention module is recognized by a head count attribute (``num_heads``,
    ``num_attention_heads``); the innermost such module not inside a known family is taken.
    """
    def has_heads(m: nn.Module) -> bool:
        return any(isinstance(getattr(m, a, None), int) for a in _HEAD_COUNT_ATTRIBUTES)

    inside_known = {m for attn in known for m in attn.modules()}
    found = {}
    for name, module in model.named_modules():
        if module in inside_known or not has_heads(module):
            continue
        descendants = list(module.modules())[1:]
        if any(has_heads(m) or m in known for m in descendants):
            continue  # a block or stage that holds the attention module
        for child in descendants:
            kind = layer_kind(child)
            if kind is not None and kind.macs_scale_with_widths:
                found[child] = name
    return found


def attention_kinds(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The sorted, distinct classes (``module.Class``) of the named modules."""
    return sorted({f"{type(m).__module__}.{type(m).__name__}" for m in map(model.get_submodule, names)})


def _index_by_unit(idxs, root_idxs, unit_of_root, num_units: int) -> torch.Tensor:
    """Arrange a member's indices as a (num_units, per_unit) tensor, each index once per unit."""
    rows: list[list[int]] = [[] for _ in range(num_units)]
    for i, r in zip(idxs, root_idxs):
        if int(i) not in rows[unit_of_root[int(r)]]:  # roots tied by a shared channel may list it twice
            rows[unit_of_root[int(r)]].append(int(i))
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        # Unequal fan-out (e.g. a channel feeding a flatten of varying size) cannot be tabulated.
        raise _UnequalUnitsError("a group maps units to unequal numbers of channels")
    return torch.tensor(rows, dtype=torch.long)


def classifier_names(model: nn.Module) -> list[str]:
    """Names of the layers producing the class logits (never pruned on their output side).

    ``get_classifier()`` (timm) or ``classifier`` (transformers), else the last Linear. When that
    is a head module (an MLP head, or a distillation head with two classifiers), every Linear or
    conv inside it that outputs as many channels as its last one.
    """
    names = {m: n for n, m in model.named_modules()}
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else getattr(model, "classifier", None)
    has_head = isinstance(head, nn.Module) and head in names
    layers = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))] if has_head else []
    if not layers:  # e.g. HGNetV2's `classifier` only pools; its Linear is `fc`
        layers = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    if not layers:
        raise ValueError("cannot find the classifier layer: pass it in ignored_layers")
    width = _out_width(layers[-1])
    return [names[m] for m in layers if _out_width(m) == width]


def _out_width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
