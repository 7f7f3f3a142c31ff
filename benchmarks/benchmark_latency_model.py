"""Where the latency model's prediction of a slim model goes wrong, term by term.

``LatencyModel`` predicts a slim model as ``layer_scale x (its layers' table entries at the kept
widths) + rest_ms x (share of the dense layers' output activations kept)``. Each factor is an
assumption; this script measures each on saved slim models (e.g. ``benchmark.py``'s ``runs/*``)
against the dense model's profile:

- *tables*: the tables interpolated at the slim widths ÷ the slim layers timed alone at those
  widths, beside the same ratio at the dense widths (which holds the drift of the machine since
  the profile): a gap between the two is interpolation error;
- *in-model scale*: (whole forward - rest) ÷ layers timed alone, dense and slim (the profile
  assumes the dense model's ratio holds at every width);
- *rest*: the share of the dense rest the slim model keeps, predicted from the activations kept,
  against the slim and dense models timed with their layers stubbed out;
- and the whole: the latency reduction predicted against the one measured.

Ratios, so that the machine's drift since the profile cancels. Dense and slim are timed in turns
(whole and stubbed forwards), the layers alone once each::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_latency_model.py \\
        --profile outputs/ceiling/profiles/cifar_resnet56-32.json --run_dirs outputs/benchmark/runs/*
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from benchmark_speedup import saved_run_key
from hf_prune import AutoPrunedModel, ModelSource, StructureGraph
from hf_prune.hub.model_dir import write_text_atomic
from hf_prune.latency import median_latencies_in_turns
from hf_prune.structure.latency_model import (
    LatencyModel,
    LatencyProfile,
    layer_shapes,
    time_layer_ms,
    without_timed_layers,
)

COLUMNS = {
    "method": "method",
    "ranking": "ranking",
    "target": "target",
    "seed": "seed",
    "reduction_predicted": "latency reduction predicted",
    "reduction_measured": "measured",
    "tables_dense": "tables ÷ alone, dense",
    "tables_slim": "slim",
    "scale_dense": "in model ÷ alone, dense",
    "scale_slim": "slim",
    "rest_kept_predicted": "rest kept predicted",
    "rest_kept_measured": "measured",
}


@dataclass
class LatencyModelArguments:
    profile: str = field(metadata={"help": "The dense model's latency profile (latency_profile.json of a run)."})
    run_dirs: list[str] = field(metadata={"help": "Saved slim models of the profiled architecture and input size."})
    output_dir: str = field(default="outputs/latency_model", metadata={"help": "Where latency_model.md goes."})
    rounds: int = field(default=5, metadata={"help": "Turns of dense/slim timings (whole, stubbed and layers alone)."})
    min_run_time: float = field(default=0.5, metadata={"help": "Seconds of repeats behind each timing."})


def tables_ms(model: torch.nn.Module, profile: LatencyProfile, example: torch.Tensor) -> float:
    """The profile's tables at the model's layer widths now, summed over calls (unscaled)."""
    return sum(
        shape.calls * profile.table(profile.layers[name]).at(shape.out_width, shape.in_width)
        for name, shape in layer_shapes(model, example).items()
    )


def layers_alone_ms(
    models: list[torch.nn.Module], profile: LatencyProfile, example: torch.Tensor, rounds: int
) -> list[float]:
    """Each model's layers timed alone at their widths now, summed over calls: medians of rounds that time
    every model's layers in turn."""
    shapes = [layer_shapes(model, example).values() for model in models]
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model_shapes, model_times in zip(shapes, times):
            model_times.append(sum(
                shape.calls * time_layer_ms(
                    shape.signature, shape.out_width, shape.in_width, profile.batch_size, torch.device("cpu")
                )
                for shape in model_shapes
            ))
    return [statistics.median(t) for t in times]


def diagnose(run_dir: Path, profile: LatencyProfile, options: LatencyModelArguments) -> dict:
    """One slim model's predicted and measured terms (see the module docstring)."""
    config = json.loads((run_dir / "config.json").read_text())
    example = torch.zeros(1, *profile.input_size)
    dense = ModelSource.from_config(config).build("cpu").eval()
    slim = AutoPrunedModel.from_pretrained(run_dir).eval()
    predictor = LatencyModel(StructureGraph(slim, example), profile, example)
    slim_tables, dense_tables = tables_ms(slim, profile, example), tables_ms(dense, profile, example)
    dense_alone, slim_alone = layers_alone_ms([dense, slim], profile, example, options.rounds)
    stubs = [without_timed_layers(model, example, profile.batch_size) for model in (dense, slim)]
    dense_ms, slim_ms, dense_rest, slim_rest = median_latencies_in_turns(
        [dense, slim, *stubs], tuple(profile.input_size), profile.batch_size, options.rounds,
        min_run_time=options.min_run_time,
    )
    rest_predicted = predictor.base_cost - profile.layer_scale * slim_tables
    return {
        **{key: str(value) for key, value in saved_run_key(run_dir).items()},
        "reduction_predicted": 1 - predictor.base_cost / profile.predicted_dense_ms,
        "reduction_measured": 1 - slim_ms / dense_ms,
        "tables_dense": dense_tables / dense_alone,
        "tables_slim": slim_tables / slim_alone,
        "scale_dense": (dense_ms - dense_rest) / dense_alone,
        "scale_slim": (slim_ms - slim_rest) / slim_alone,
        "rest_kept_predicted": rest_predicted / profile.rest_ms,
        "rest_kept_measured": slim_rest / dense_rest,
    }


def table(rows: list[dict], profile: LatencyProfile) -> str:
    lines = [
        f"Profile: dense {profile.dense_ms:.2f} ms, rest {profile.rest_ms:.2f} ms, layer_scale "
        f"{profile.layer_scale:.3f} ({profile.machine}, batch {profile.batch_size})",
        "",
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [row[key] if isinstance(row[key], str) else f"{row[key]:.2f}" for key in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(LatencyModelArguments).parse_args_into_dataclasses(args=argv)
    profile = LatencyProfile.load(options.profile)
    if profile.device != "cpu":  # the layers alone and the whole models are timed here, on the CPU
        raise ValueError(
            f"{options.profile} was measured on '{profile.device}', but this script times on the CPU: pass a CPU profile"
        )
    rows = [diagnose(Path(run_dir), profile, options) for run_dir in options.run_dirs]
    text = table(rows, profile)
    Path(options.output_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(options.output_dir) / "latency_model.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
