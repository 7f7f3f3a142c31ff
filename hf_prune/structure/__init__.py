"""Structure engine: coupled channel groups, MACs counting, physical pruning and shape specs."""

from hf_prune.structure.cost import CostModel, MacsModel
from hf_prune.structure.counting import count_macs_params
from hf_prune.structure.graph import ChannelGroup, StructureGraph, TensorSlice, UnprunableLayerError
from hf_prune.structure.latency_model import LatencyModel, LatencyProfile, ProfileMismatchError, measure_profile
from hf_prune.structure.masking import PrefixCache, mask_units, masking_is_exact, unit_output_masks
from hf_prune.structure.selection import (
    TARGET_TOLERANCE,
    Selection,
    UnreachableTargetError,
    group_saliencies,
    min_units_kept,
    scores_per_cost,
    select_lowest,
    unit_saliency,
)
from hf_prune.structure.shape_spec import ShapeSpecError, apply_shape_spec, export_shape_spec

__all__ = [
    "TARGET_TOLERANCE",
    "ChannelGroup",
    "CostModel",
    "LatencyModel",
    "LatencyProfile",
    "MacsModel",
    "PrefixCache",
    "ProfileMismatchError",
    "Selection",
    "ShapeSpecError",
    "StructureGraph",
    "TensorSlice",
    "UnprunableLayerError",
    "UnreachableTargetError",
    "apply_shape_spec",
    "count_macs_params",
    "export_shape_spec",
    "group_saliencies",
    "mask_units",
    "measure_profile",
    "masking_is_exact",
    "min_units_kept",
    "scores_per_cost",
    "select_lowest",
    "unit_output_masks",
    "unit_saliency",
]
