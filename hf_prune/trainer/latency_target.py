"""Where a run's latency profile comes from: a given file, the output directory's, or a measurement.

The trainer calls :func:`resolve_profile` on the main process only (the others receive the
result by broadcast), times the slim model against the dense architecture with
:func:`measure_after_prune_ms` after each prune and reports both with :func:`latency_summary`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from hf_prune.hub import ModelSource
from hf_prune.latency import measure_latency_ms, median_latencies_in_turns
from hf_prune.structure import StructureGraph
from hf_prune.structure.latency_model import LatencyModel, LatencyProfile, measure_profile

PROFILE_NAME = "latency_profile.json"
DEFAULT_BATCH_SIZES = {"cpu": 64, "cuda": 128}

logger = logging.get_logger(__name__)


def latency_device(args: Any, training_device: torch.device) -> torch.device:
    """``args.latency_device``, else the training device."""
    return torch.device(args.latency_device) if args.latency_device else training_device


def default_batch_size(device: torch.device) -> int:
    """64 on CPU, 128 on CUDA (and on other accelerators)."""
    return DEFAULT_BATCH_SIZES.get(device.type, DEFAULT_BATCH_SIZES["cuda"])


def resolve_profile(
    args: Any, graph: StructureGraph, example_inputs: torch.Tensor, device: torch.device
) -> LatencyProfile:
    """The profile ``args.latency_profile`` names, else ``output_dir``'s if it fits, else a new measurement.

    A new profile is written to ``output_dir/latency_profile.json`` (reused by a resumed run).

    Raises:
        ValueError: the given profile is unreadable or does not fit the model, device or batch size, or
            the device is an accelerator this machine lacks.
    """
    if device.type != "cpu" and not torch.accelerator.is_available():
        raise ValueError(
            f"latency_device is '{device}', but this machine has no accelerator: pass --latency_device cpu, or measure "
            "the profile on the deployment machine and pass it with --latency_profile"
        )
    if args.latency_profile is not None:
        profile = LatencyProfile.load(args.latency_profile)
        _check(profile, graph, example_inputs, device, args.latency_batch_size)
        return profile
    batch_size = args.latency_batch_size or default_batch_size(device)
    cached = os.path.join(args.output_dir, PROFILE_NAME)
    if os.path.isfile(cached):
        try:
            profile = LatencyProfile.load(cached)
            _check(profile, graph, example_inputs, device, batch_size)
            logger.info(f"reusing the latency profile {cached}")
            return profile
        except ValueError as error:
            logger.warning(f"{cached} does not fit this run ({error}); measuring a new one")
    profile = measure_profile(graph, example_inputs, batch_size, device, disable_tqdm=bool(args.disable_tqdm))
    os.makedirs(args.output_dir, exist_ok=True)
    profile.save(cached)
    return profile


def _check(
    profile: LatencyProfile, graph: StructureGraph, example_inputs: torch.Tensor, device: torch.device,
    batch_size: int | None,
) -> None:
    profile.check_settings(str(device), batch_size)
    LatencyModel(graph, profile, example_inputs)  # checks every layer's shape


def measure_after_prune_ms(
    model: nn.Module, dense_source: ModelSource | None, input_size: tuple[int, ...], profile: LatencyProfile,
    device: torch.device, rounds: int = 3,
) -> tuple[float, float | None]:
    """The slim model's and the dense architecture's eval forward latency on ``device`` at the profile's batch
    size, in float32, timed in turns (medians of ``rounds``) so that both see the same machine load.

    The slim model is timed on a copy, the dense one is built from ``dense_source`` with random weights;
    without a source only the slim model is timed (dense: ``None``).
    """
    slim = copy.deepcopy(model).to(device=device, dtype=torch.float32)
    if dense_source is None:
        return measure_latency_ms(slim, input_size, profile.batch_size), None
    dense = dense_source.build(device).to(torch.float32)
    slim_ms, dense_ms = median_latencies_in_turns((slim, dense), input_size, profile.batch_size, rounds)
    return slim_ms, dense_ms


def latency_summary(
    profile: LatencyProfile | None, events: Sequence[dict[str, Any]], target: float | None
) -> dict[str, Any] | None:
    """The profile's device, batch size and dense latency, and the slim model's predicted and measured
    latency after the last prune (``events[-1]``) with the reductions they make; ``None`` without a profile.

    A predicted reduction is relative to the tables' dense prediction, a measured one to
    ``measured_dense_ms``: the dense architecture timed in turns with the slim model
    (``dense_timed_in_turns``), else the profile's dense timing."""
    if profile is None:
        return None
    last = events[-1] if events else {}
    predicted, measured = last.get("latency_ms_predicted"), last.get("latency_ms_measured")
    in_turns = last.get("latency_ms_dense_measured") is not None
    measured_dense = last["latency_ms_dense_measured"] if in_turns else profile.dense_ms
    return {
        "device": profile.device, "machine": profile.machine, "batch_size": profile.batch_size,
        "target_latency_reduction": target, "dense_ms": profile.dense_ms,
        "predicted_dense_ms": profile.predicted_dense_ms, "predicted_ms": predicted, "measured_ms": measured,
        "measured_dense_ms": measured_dense, "dense_timed_in_turns": in_turns,
        "predicted_reduction": None if predicted is None else 1.0 - predicted / profile.predicted_dense_ms,
        "measured_reduction": None if measured is None else 1.0 - measured / measured_dense,
    }

