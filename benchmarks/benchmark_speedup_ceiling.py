"""The most speed a MACs target can buy on this machine: the latency-optimal widths, measured.

``benchmark_speedup.py`` measures what the methods' allocations give; this script asks what *any*
allocation under the same constraints could give, so that a speed-up ÷ MACs goal can be told
apart from what the hardware allows. For every model and MACs target:

1. the dense model's latency profile is measured (``measure_profile``; saved and reused under
   ``<output_dir>/profiles``);
2. every combination of kept widths over the model's *stacks* is scored by the analytic MACs
   model and the profile's latency model. A stack is one group, or the groups at the same place of
   a stage's repeated blocks (``repeated_block_ties``: blocks of a stage have one shape, so they
   share one width here); its candidate widths are ``round_to`` multiples between the
   ``layer_prune_limit`` floor and the full width (at most ``widths_per_stack``, evenly spread);
3. among the combinations whose MACs reduction lies within ``tolerance`` above the target, the
   ``candidates`` best predicted speed-up ÷ MACs ratios are built physically (the first units kept;
   weights do not matter for time) and timed once each: the profile's predictions err most at the
   narrowest widths, so the prediction only shortlists;
4. the ``top`` best measured are timed alternately with the dense model in this process, with the
   slim models of ``--method_runs`` (``benchmark_speedup.py``'s runs of the same model and target)
   beside them for comparison::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_speedup_ceiling.py \\
        --output_dir outputs/ceiling --method_runs outputs/speedup/runs

The MACs ratios are counted on the built models (``count_macs_params``), not taken from the search.
The search space is stage-uniform, so the ceiling is that of stage-uniform allocations; the
methods may choose per-block widths.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hf_prune import AutoPrunedModel, StructureGraph, count_macs_params
from hf_prune.hub.model_dir import write_text_atomic
from hf_prune.latency import measure_latency_ms, median_latencies_in_turns
from hf_prune.models.loader import load_model
from hf_prune.structure.cost import MacsModel
from hf_prune.structure.latency_model import LatencyModel, LatencyProfile, measure_profile
from hf_prune.structure.selection import min_units_kept
from hf_prune.structure.widths import aligned_floor, repeated_block_ties, width_multiples


@dataclass
class CeilingArguments:
    output_dir: str = field(default="outputs/ceiling", metadata={"help": "Profiles go to profiles/, the table to ceiling.md."})
    models: list[str] = field(
        default_factory=lambda: ["cifar_resnet56:32", "resnet18:64"],
        metadata={"help": "'timm name:input pixels' of every model."},
    )
    targets: list[float] = field(default_factory=lambda: [0.5, 0.8])
    round_to: str = field(default="auto", metadata={"help": "Width multiples, as PruningArguments.round_to."})
    layer_prune_limit: float | None = field(
        default=None,
        metadata={"help": "Largest fraction of a group removed. Default: max(0.75, target + 0.1), as benchmark_speedup."},
    )
    widths_per_stack: int = field(default=5, metadata={"help": "Candidate kept widths tried per stack."})
    tolerance: float = field(default=0.03, metadata={"help": "Largest overshoot of the MACs target searched."})
    candidates: int = field(
        default=40, metadata={"help": "Allocations with the best predicted speed-up ÷ MACs ratio that are built and timed once."}
    )
    top: int = field(default=3, metadata={"help": "Of those, the best measured, timed again in turns with the dense model."})
    method_runs: str | None = field(
        default=None,
        metadata={"help": "benchmark_speedup.py's runs/ folder: its slim models of the same model and target "
                          "(round_to auto) are timed in the same turns."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per timed forward (and per profiled forward)."})
    threads: int = field(default=1, metadata={"help": "Intra-op threads of every measurement."})
    rounds: int = field(default=5, metadata={"help": "Alternations of the timings; medians are reported."})
    min_run_time: float = field(default=0.5, metadata={"help": "Seconds of repeats in each timing."})


@dataclass(frozen=True)
class Stack:
    """Groups that keep one width in the search, and the widths (in units) tried."""

    names: tuple[str, ...]
    widths: tuple[int, ...]


def search_stacks(graph: StructureGraph, round_to: str, prune_limit: float, widths_per_stack: int) -> list[Stack]:
    """One stack per tied set of groups and per untied group, with its candidate kept widths."""
    multiples = width_multiples(graph.groups, round_to, "cpu", graph.model)
    units = {g.name: g.num_units for g in graph.groups}
    tied = repeated_block_ties(graph.groups)
    sets = tied + [[name] for name in units if not any(name in names for names in tied)]
    stacks = []
    for names in sets:
        full, multiple = units[names[0]], max(multiples[n] for n in names)
        floor = aligned_floor(full, min_units_kept(full, prune_limit), multiple)
        widths = sorted({*range(floor, full, multiple), full})
        picks = sorted({round(i * (len(widths) - 1) / max(widths_per_stack - 1, 1)) for i in range(widths_per_stack)})
        stacks.append(Stack(tuple(names), tuple(widths[i] for i in picks)))
    return stacks


def removed_units(stacks: list[Stack], widths: tuple[int, ...], graph: StructureGraph) -> dict[str, int]:
    units = {g.name: g.num_units for g in graph.groups}
    return {name: units[name] - width for stack, width in zip(stacks, widths) for name in stack.names}


def best_allocations(
    graph: StructureGraph, stacks: list[Stack], macs: MacsModel, latency: LatencyModel, target: float,
    tolerance: float, top: int,
) -> list[tuple[float, float, dict[str, int]]]:
    """``(MACs reduction, predicted latency reduction, removed units)`` of the ``top`` allocations whose MACs
    reduction lies in ``[target, target + tolerance]``, best predicted speed-up ÷ MACs ratio first."""
    found = []
    combos = itertools.product(*(s.widths for s in stacks))
    total = math.prod(len(s.widths) for s in stacks)
    for widths in tqdm(combos, total=total, desc="allocations", leave=False):
        removed = removed_units(stacks, widths, graph)
        reduction = macs.reduction(removed)
        if target <= reduction <= target + tolerance:
            found.append((reduction, latency.reduction(removed), removed))
    return sorted(found, key=lambda row: (1 - row[0]) / (1 - row[1]), reverse=True)[:top]


def built(dense: nn.Module, example: torch.Tensor, removed: dict[str, int]) -> nn.Module:
    """A copy of ``dense`` that keeps the first units of every group."""
    model = copy.deepcopy(dense)
    graph = StructureGraph(model, example)
    graph.apply({g.name: list(range(g.num_units - removed.get(g.name, 0))) for g in graph.groups})
    return model.eval()


def fastest_measured(
    dense: nn.Module, example: torch.Tensor, allocations: list[tuple[float, float, dict[str, int]]],
    options: CeilingArguments,
) -> list[tuple[nn.Module, float]]:
    """``(built model, predicted latency reduction)`` of the ``options.top`` allocations with the best measured
    speed-up ÷ MACs ratio, each allocation built and timed once (the dense time is common to all)."""
    timed = []
    for macs_reduction, predicted, removed in tqdm(allocations, desc="timing allocations", leave=False):
        ms = measure_latency_ms(built(dense, example, removed), tuple(example.shape[1:]), options.batch_size,
                                num_threads=options.threads, min_run_time=options.min_run_time)
        timed.append(((1 - macs_reduction) / ms, removed, predicted))
    timed.sort(key=lambda row: row[0], reverse=True)
    return [(built(dense, example, removed), predicted) for _, removed, predicted in timed[: options.top]]


def profile_for(graph: StructureGraph, example: torch.Tensor, path: Path, batch_size: int) -> LatencyProfile:
    if path.exists():
        return LatencyProfile.load(str(path))
    profile = measure_profile(graph, example, batch_size, "cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.save(str(path))
    return profile


def method_models(runs: str | None, model: str, size: int, target: float) -> dict[str, nn.Module]:
    """benchmark_speedup.py's slim models of this model and target (round_to auto), by method."""
    if runs is None:
        return {}
    found = {}
    for run_dir in sorted(Path(runs).glob(f"{model}-{size}-*-{target}-auto")):
        method = run_dir.name.removeprefix(f"{model}-{size}-").removesuffix(f"-{target}-auto")
        found[method] = AutoPrunedModel.from_pretrained(run_dir).eval()
    return found


def measure(model_name: str, size: int, target: float, options: CeilingArguments) -> list[dict]:
    """Rows of the ceiling allocations and the methods' models, timed in turns with the dense model."""
    torch.manual_seed(0)
    dense = load_model(model_name, 10, image_size=size).model.eval()
    example = torch.zeros(1, 3, size, size)
    graph = StructureGraph(dense, example)
    profile = profile_for(graph, example, Path(options.output_dir) / "profiles" / f"{model_name}-{size}.json",
                          options.batch_size)
    limit = options.layer_prune_limit or max(0.75, target + 0.1)
    stacks = search_stacks(graph, options.round_to, limit, options.widths_per_stack)
    best = best_allocations(graph, stacks, MacsModel(graph, example), LatencyModel(graph, profile, example),
                            target, options.tolerance, options.candidates)
    fastest = fastest_measured(dense, example, best, options)
    candidates = {f"fastest measured #{rank + 1}": (slim, predicted) for rank, (slim, predicted) in enumerate(fastest)}
    candidates |= {method: (slim, None) for method, slim in method_models(options.method_runs, model_name, size, target).items()}
    times = median_latencies_in_turns(
        [dense, *(slim for slim, _ in candidates.values())], (3, size, size), options.batch_size, options.rounds,
        num_threads=options.threads, min_run_time=options.min_run_time,
    )
    dense_macs = count_macs_params(dense, example)[0]
    return [
        {"model": model_name, "size": size, "target": target, "allocation": label,
         "widths": _widths(slim), "macs_ratio": dense_macs / count_macs_params(slim, example)[0],
         "predicted_speedup": None if predicted is None else 1 / (1 - predicted),
         "dense_ms": times[0], "slim_ms": slim_ms}
        for (label, (slim, predicted)), slim_ms in zip(candidates.items(), times[1:])
    ]


def _widths(model: nn.Module) -> str:
    """Output widths of the convolution and linear layers, run-length encoded (``16x3 32``)."""
    widths = [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
              for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    runs = [(w, len(list(group))) for w, group in itertools.groupby(widths)]
    return " ".join(f"{w}x{n}" if n > 1 else str(w) for w, n in runs)


def table(rows: list[dict], batch_size: int) -> str:
    lines = [f"| model | px | target | allocation | MACs ratio | predicted speed-up | dense ms (bs{batch_size}) | "
             "slim ms | speed-up | speed-up ÷ MACs ratio | conv/linear output widths |", "|---" * 11 + "|"]
    for r in rows:
        speedup = r["dense_ms"] / r["slim_ms"]
        predicted = "–" if r["predicted_speedup"] is None else f"{r['predicted_speedup']:.2f}x"
        lines.append(f"| {r['model']} | {r['size']} | {r['target']:.0%} | {r['allocation']} | {r['macs_ratio']:.2f}x | "
                     f"{predicted} | {r['dense_ms']:.2f} | {r['slim_ms']:.2f} | {speedup:.2f}x | "
                     f"{speedup / r['macs_ratio']:.2f} | {r['widths']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(CeilingArguments).parse_args_into_dataclasses(args=argv)
    rows = []
    for spec in options.models:
        model, size = spec.rsplit(":", 1)
        for target in options.targets:
            rows += measure(model, int(size), target, options)
    result = table(rows, options.batch_size)
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "ceiling.md", result + "\n")
    write_text_atomic(out / "ceiling.json", json.dumps(rows, indent=1))
    print(result)
    return result


if __name__ == "__main__":
    main()
