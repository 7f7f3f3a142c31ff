"""Latency of a candidate plan, predicted from per-layer tables measured on the deployment device.

A :class:`LatencyProfile` is measured once per model: every convolution and linear layer is
timed alone at a few widths of each dimension a group can shrink (1/8, 2/8, ..., all of its
dense width; layers of the same shape share one table), the whole dense model is timed, and so
is the model with those layers stubbed out (they return their stored outputs): that is what the
tables leave out (normalization, activations, residual adds, pooling: passes over the layers'
outputs), taken to shrink with the layers' output activations.

:class:`LatencyModel` predicts the latency of the model now, and after removing units: the
layers' tables interpolated at the widths left, plus that rest. It is a
:class:`~hf_prune.structure.cost.CostModel`, so ``select_lowest`` and the methods prune to a
latency target as they prune to a MACs target. A profile is plain JSON, reusable across runs and
machines; it is checked against the model before use.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer
from tqdm.auto import tqdm

from hf_prune.hub.trust import read_json_object
from hf_prune.latency import measure_latency_ms
from hf_prune.models.forward import run_model
from hf_prune.structure.cost import CostModel, kept_size, width_shrinks
from hf_prune.structure.graph import StructureGraph
from hf_prune.structure.layer_kinds import is_channel_coupled_conv

PROFILE_FORMAT = 1
WIDTH_FRACTIONS = tuple(k / 8 for k in range(1, 9))
# Seconds of repeated runs behind each table entry (the dense model gets measure_latency_ms's default).
LAYER_MIN_RUN_TIME = 0.1
_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ProfileMismatchError(ValueError):
    """A latency profile was measured for another model, input size, batch size or device."""


@dataclass(frozen=True)
class LayerShape:
    """Everything a layer is timed with except its widths (``signature``), and its dense widths.

    ``signature`` is a JSON object: ``op`` (``conv1d/2d/3d`` or ``linear``), the per-image input
    shape without the channels (``spatial``), and the convolution's kernel, stride, padding,
    dilation, ``groups`` (1, or fixed for a grouped conv whose channels stay) or
    ``channels_per_group`` (a depthwise/grouped conv whose inputs follow its outputs).
    """

    signature: str
    out_width: int
    in_width: int
    activations: int  # output elements per image at the dense widths
    calls: int = 1


@dataclass
class LatencyTable:
    """Milliseconds of one layer shape at every (output width, input width) of a grid."""

    out_widths: list[int]
    in_widths: list[int]
    ms: list[list[float]]  # ms[i][j]: out_widths[i], in_widths[j]

    def at(self, out_width: float, in_width: float) -> float:
        """Bilinear interpolation (linear extrapolation past the grid, never below 0)."""
        rows = [_interpolate(self.in_widths, row, in_width) for row in self.ms]
        return max(0.0, _interpolate(self.out_widths, rows, out_width))


def _interpolate(xs: Sequence[int], ys: Sequence[float], x: float) -> float:
    if len(xs) == 1:
        return ys[0]
    i = min(max(1, next((k for k, v in enumerate(xs) if v >= x), len(xs) - 1)), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass
class LatencyProfile:
    """Measured latencies of one model on one device at one batch size (see the module docstring).

    Attributes:
        device: the device type the profile was measured on (``"cpu"``, ``"cuda"``).
        machine: what the device was (processor or GPU name, threads), for the record.
        batch_size: images per forward.
        input_size: one input's shape.
        dense_ms: the whole dense model's forward (median of three timings: before, midway through and after the tables).
        rest_ms: the dense model's forward with the timed layers stubbed out (timed alongside ``dense_ms``).
        layers: every timed layer by module name.
        tables: one table per layer shape (``signature`` and dense widths).
    """

    device: str
    machine: str
    batch_size: int
    input_size: list[int]
    dense_ms: float
    rest_ms: float
    layers: dict[str, LayerShape]
    tables: dict[str, LatencyTable]

    @property
    def layer_scale(self) -> float:
        """Factor that makes the dense layers' table entries add up to the measured dense model minus the rest.

        Layers timed alone need not add up to the whole forward (caches, layout reorders between layers;
        cifar_resnet56 on an AVX2 CPU: tables plus rest 1.5x the model); unscaled, that error lands in
        every predicted reduction. 1 when the measurements leave no room for the layers.
        """
        tables_ms, layers_ms = self._dense_tables_ms, self.dense_ms - self.rest_ms
        return layers_ms / tables_ms if layers_ms > 0 and tables_ms > 0 else 1.0

    @property
    def predicted_dense_ms(self) -> float:
        """The dense model as the scaled tables see it (``dense_ms`` when ``dense_ms > rest_ms``); reductions
        are relative to it."""
        return self.rest_ms + self.layer_scale * self._dense_tables_ms

    @property
    def _dense_tables_ms(self) -> float:
        """The layers' table entries at their dense widths, summed over calls."""
        return sum(s.calls * self.table(s).at(s.out_width, s.in_width) for s in self.layers.values())

    def table(self, shape: LayerShape) -> LatencyTable:
        return self.tables[_table_key(shape)]

    def save(self, path: str) -> None:
        """Write the profile as JSON, atomically (a temporary file, then renamed)."""
        text = json.dumps({"format": PROFILE_FORMAT, **asdict(self)}, indent=1)
        with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(f"{path}.tmp", path)

    @classmethod
    def load(cls, path: str) -> LatencyProfile:
        """Read a profile written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a latency profile of this format.
        """
        saved = read_json_object(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
        try:
            if saved["format"] != PROFILE_FORMAT:
                raise ValueError(f"format {saved['format']!r}, this hf_prune reads format {PROFILE_FORMAT}")
            profile = cls(
                device=str(saved["device"]), machine=str(saved["machine"]), batch_size=_positive(saved["batch_size"]),
                input_size=[_positive(v) for v in saved["input_size"]], dense_ms=_milliseconds(saved["dense_ms"]),
                rest_ms=_milliseconds(saved["rest_ms"]),
                layers={str(name): _layer_shape(s) for name, s in saved["layers"].items()},
                tables={str(key): _table(t) for key, t in saved["tables"].items()},
            )
            missing = [name for name, shape in profile.layers.items() if _table_key(shape) not in profile.tables]
            if missing:
                raise ValueError(f"no table for layers {missing[:3]}")
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(
                f"{path} is not a latency profile hf_prune can read ({type(error).__name__}: {error}): measure a new "
                "one (leave latency_profile unset; the run writes latency_profile.json into its output_dir)"
            ) from None
        return profile

    def check_settings(self, device: str, batch_size: int | None) -> None:
        """Refuse a profile of another device type or batch size than the run asks for.

        Raises:
            ProfileMismatchError: naming both values and the fix.
        """
        if torch.device(device).type != self.device:
            raise ProfileMismatchError(
                f"the latency profile was measured on '{self.device}', but latency_device is '{device}': pass "
                f"--latency_device {self.device}, or leave latency_profile unset to measure on '{device}'"
            )
        if batch_size is not None and batch_size != self.batch_size:
            raise ProfileMismatchError(
                f"the latency profile was measured at batch {self.batch_size}, but latency_batch_size is {batch_size}: "
                "leave latency_batch_size unset to use the profile's, or measure a new profile"
            )


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


def _milliseconds(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{value!r} is not a duration in milliseconds")
    return float(value)


def _layer_shape(saved: Mapping[str, Any]) -> LayerShape:
    return LayerShape(
        str(saved["signature"]), _positive(saved["out_width"]), _positive(saved["in_width"]),
        _positive(saved["activations"]), _positive(saved["calls"]),
    )


def _table(saved: Mapping[str, Any]) -> LatencyTable:
    outs, ins = [_positive(w) for w in saved["out_widths"]], [_positive(w) for w in saved["in_widths"]]
    ms = [[_milliseconds(v) for v in row] for row in saved["ms"]]
    grid_sorted = outs == sorted(set(outs)) and ins == sorted(set(ins))
    if not grid_sorted or len(ms) != len(outs) or any(len(row) != len(ins) for row in ms):
        raise ValueError("a table's grid and values do not match")
    return LatencyTable(outs, ins, ms)


def _table_key(shape: LayerShape) -> str:
    return f"{shape.signature} {shape.out_width}x{shape.in_width}"


# ---------------------------------------------------------------------------------------------- measuring
def measure_profile(
    graph: StructureGraph,
    example_inputs: torch.Tensor,
    batch_size: int,
    device: str | torch.device,
    disable_tqdm: bool = False,
) -> LatencyProfile:
    """Time the graph's model and its layers at a few widths on ``device`` (in float32, eval mode).

    Args:
        graph: the structure of the dense model.
        example_inputs: a batch of one image (its shape gives the input size).
        batch_size: images per timed forward.
        device: where to time (the model is copied there; the original is not touched).
        disable_tqdm: hide the progress bar.
    """
    device = torch.device(device)
    model = copy.deepcopy(graph.model).to(device=device, dtype=torch.float32)
    inputs = example_inputs[:1].to(device=device, dtype=torch.float32)
    layers = layer_shapes(model, inputs)
    prunable = set(width_shrinks(graph))
    grids = {}
    for name, shape in layers.items():
        weight = f"{name}.weight" if name else "weight"
        follows_out = "channels_per_group" in shape.signature  # a depthwise conv's inputs are its outputs
        groups = _input_groups(shape.signature)
        grids[_table_key(shape)] = (
            shape.signature,
            _grid(shape.out_width, (weight, 0) in prunable),
            [w * groups for w in _grid(shape.in_width // groups, (weight, 1) in prunable and not follows_out)],
        )
    stub = without_timed_layers(model, inputs, batch_size)
    wholes: list[tuple[float, float]] = []  # (dense, rest) before, midway through and after the tables
    bar = tqdm(total=3 + sum(len(o) * len(i) for _, o, i in grids.values()), desc="latency profile", disable=disable_tqdm)

    def time_wholes() -> None:
        wholes.append(tuple(measure_latency_ms(m, tuple(inputs.shape[1:]), batch_size) for m in (model, stub)))
        bar.update()

    with bar:
        time_wholes()
        tables = {}
        for index, (key, (signature, outs, ins)) in enumerate(grids.items()):
            if index == len(grids) // 2:
                time_wholes()
            ms = []
            for out_width in outs:
                ms.append([time_layer_ms(signature, out_width, in_width, batch_size, device) for in_width in ins])
                bar.update(len(ins))
            tables[key] = LatencyTable(outs, ins, ms)
        time_wholes()
    # Medians of three spread over the minutes the tables take: one burst of machine load moves neither.
    dense_ms, rest_ms = (statistics.median(times) for times in zip(*wholes))
    return LatencyProfile(
        device.type, _machine(device), batch_size, list(inputs.shape[1:]), dense_ms, rest_ms, layers, tables
    )


def without_timed_layers(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> nn.Module:
    """A copy of ``model`` whose timed layers return their outputs of one real forward, computing nothing."""
    stub = copy.deepcopy(model).eval()
    outputs: dict[nn.Module, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda module, args, output: outputs.setdefault(module, output))
        for module in stub.modules() if _is_timed(module)
    ]
    with torch.inference_mode():
        run_model(stub, inputs.expand(batch_size, *inputs.shape[1:]).contiguous())
    for handle in handles:
        handle.remove()
    for module, output in outputs.items():
        module.forward = lambda *args, _output=output, **kwargs: _output
    return stub


def _input_groups(signature: str) -> int:
    """Groups of a grouped conv whose channels do not go together (1 for other layers).

    Its inputs shrink by the same position in every group: its weight's input dimension counts one group's.
    """
    return json.loads(signature).get("groups", 1)


def _grid(width: int, prunable: bool) -> list[int]:
    return sorted({max(1, round(f * width)) for f in WIDTH_FRACTIONS}) if prunable else [width]


def layer_shapes(model: nn.Module, example_inputs: Any) -> dict[str, LayerShape]:
    """Every conv/linear layer an eval-mode forward on ``example_inputs`` runs, with its shape (found by hooks)."""
    layers: dict[str, LayerShape] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if name in layers:
                layers[name] = dataclasses.replace(layers[name], calls=layers[name].calls + 1)
            else:
                out_width, in_width, signature = _describe(module, args[0])
                layers[name] = LayerShape(signature, out_width, in_width, output[0].numel())
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules() if _is_timed(module)]
    was_training = model.training
    try:
        with torch.inference_mode():
            run_model(model.eval(), example_inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return layers


def _is_timed(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed)


def _describe(module: nn.Module, inputs: torch.Tensor) -> tuple[int, int, str]:
    """``(out width, in width, signature)`` of a conv or linear layer called on ``inputs``."""
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        signature = {"op": "linear", "spatial": list(inputs.shape[1:-1]), "bias": bias}
        return module.out_features, module.in_features, json.dumps(signature, sort_keys=True)
    dims = len(module.kernel_size)
    signature = {
        "op": f"conv{dims}d", "spatial": list(inputs.shape[2:]), "bias": bias, "kernel": list(module.kernel_size),
        "stride": list(module.stride), "dilation": list(module.dilation),
        "padding": module.padding if isinstance(module.padding, str) else list(module.padding),
    }
    if is_channel_coupled_conv(module):
        signature["channels_per_group"] = module.out_channels // module.groups
    else:
        signature["groups"] = module.groups
    return module.out_channels, module.in_channels, json.dumps(signature, sort_keys=True)


def time_layer_ms(signature: str, out_width: int, in_width: int, batch_size: int, device: torch.device) -> float:
    """Median milliseconds of one layer of ``signature`` at these widths, on random float32 data."""
    spec = json.loads(signature)
    bias = torch.randn(out_width, device=device) if spec["bias"] else None
    if spec["op"] == "linear":
        inputs = torch.randn(batch_size, *spec["spatial"], in_width, device=device)
        weight = torch.randn(out_width, in_width, device=device)
        call = lambda: F.linear(inputs, weight, bias)  # noqa: E731
    else:
        groups = out_width // spec["channels_per_group"] if "channels_per_group" in spec else spec["groups"]
        in_width = out_width if "channels_per_group" in spec else in_width
        inputs = torch.randn(batch_size, in_width, *spec["spatial"], device=device)
        weight = torch.randn(out_width, in_width // groups, *spec["kernel"], device=device)
        conv = _CONV_FUNCTIONS[len(spec["kernel"])]
        padding = spec["padding"] if isinstance(spec["padding"], str) else tuple(spec["padding"])
        stride, dilation = tuple(spec["stride"]), tuple(spec["dilation"])
        call = lambda: conv(inputs, weight, bias, stride, padding, dilation, groups)  # noqa: E731
    timer = Timer("with torch.inference_mode(): call()", globals={"torch": torch, "call": call},
                  num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=LAYER_MIN_RUN_TIME).median * 1e3


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------------------- predicting
@dataclass(frozen=True)
class _LayerTerm:
    calls: int
    table: LatencyTable
    out_now: int
    in_now: int
    out_shrinks: tuple
    in_shrinks: tuple
    follows_out: bool  # a depthwise conv: its input width is its output width
    in_groups: int  # a grouped conv whose inputs shrink group by group: its in_shrinks count one group's
    activation_share: float  # per output channel: its share of the dense layers' output activations


class LatencyModel(CostModel):
    """Predicted forward latency (milliseconds) of the graph's model now and after removing units.

    On the dense model it predicts ``profile.predicted_dense_ms``.

    Args:
        graph: the structure of the model now (dense or already pruned).
        profile: measured on the dense model (:func:`measure_profile` or :meth:`LatencyProfile.load`).
        example_inputs: a batch of one image, to read the layers' shapes now.

    Raises:
        ProfileMismatchError: the profile does not describe this model's layers.
    """

    quantity = "latency"

    def __init__(self, graph: StructureGraph, profile: LatencyProfile, example_inputs: Any) -> None:
        self.profile = profile
        self._rest_ms = profile.rest_ms
        self._layer_scale = profile.layer_scale
        self._terms = _latency_terms(graph, profile, layer_shapes(graph.model, example_inputs))

    @property
    def base_cost(self) -> float:
        return self.cost({})

    def cost(self, removed_units: Mapping[str, int]) -> float:
        """Predicted milliseconds after removing ``removed_units[group]`` units of each named group."""
        total, kept_activations = 0.0, 0.0
        for term in self._terms:
            out_width = kept_size(term.out_shrinks, removed_units) if term.out_shrinks else term.out_now
            if term.follows_out:
                in_width = out_width
            elif term.in_shrinks:
                in_width = kept_size(term.in_shrinks, removed_units) * term.in_groups
            else:
                in_width = term.in_now
            total += term.calls * term.table.at(out_width, in_width)
            kept_activations += term.activation_share * out_width
        return self._layer_scale * total + self._rest_ms * kept_activations


def _latency_terms(graph: StructureGraph, profile: LatencyProfile, now: Mapping[str, LayerShape]) -> list[_LayerTerm]:
    _check_layers(now, profile)
    shrinks = width_shrinks(graph)
    total_activations = sum(s.activations * s.calls for s in profile.layers.values())
    terms = []
    for name, shape in profile.layers.items():
        weight = f"{name}.weight" if name else "weight"
        terms.append(_LayerTerm(
            shape.calls, profile.table(shape), now[name].out_width, now[name].in_width,
            shrinks.get((weight, 0), ()), shrinks.get((weight, 1), ()), "channels_per_group" in shape.signature,
            _input_groups(shape.signature),
            shape.activations * shape.calls / total_activations / shape.out_width,
        ))
    return terms


def _check_layers(now: Mapping[str, LayerShape], profile: LatencyProfile) -> None:
    """The same layers as profiled, each of the same signature and no wider.

    Raises:
        ProfileMismatchError: listing the first differences and the fix.
    """
    problems = [f"layer '{name}' is not in this model" for name in profile.layers if name not in now]
    problems += [f"layer '{name}' is not in the profile" for name in now if name not in profile.layers]
    for name, shape in now.items():
        timed = profile.layers.get(name)
        if timed is not None and (
            shape.signature != timed.signature or shape.out_width > timed.out_width or shape.in_width > timed.in_width
        ):
            problems.append(
                f"layer '{name}' is {shape.signature} of {shape.in_width} -> {shape.out_width} channels here, "
                f"the profile timed {timed.signature} of {timed.in_width} -> {timed.out_width}"
            )
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ProfileMismatchError(
            f"the latency profile does not fit this model ({'; '.join(problems[:3])}{more}): it was measured for "
            "another model or input size. Pass this model's profile, or leave latency_profile unset to measure one."
        )
