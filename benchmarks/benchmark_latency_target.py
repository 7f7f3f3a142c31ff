"""Does ``target_latency_reduction`` deliver? Prune to a latency target, then time dense and slim.

For every model (at its input size) and method, one short run of
``scripts/prune_image_classification.py`` with ``--target_latency_reduction`` on CPU: the run
measures its latency profile (``latency_profile.json`` in the run's folder) and prunes to the
predicted reduction. Then the saved slim model (loaded with ``AutoPrunedModel``) and the dense
architecture are timed alternately in this process (batch ``latency_batch_size``, ``threads``
threads, the median of each over ``rounds`` alternations): the measured reduction is set next to
the target and the profile's prediction and the run's own measurement right after its prune (the slim model against
the rebuilt dense architecture, in turns). Goal: within 5 points of the target. Accuracy is not
the point here (a few training steps on builtin:mnist5k)::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_latency_target.py \\
        --output_dir outputs/latency_target
    python benchmarks/benchmark_latency_target.py --quick   # a tiny setting: checks that it runs
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser

from hf_prune import AutoPrunedModel
from hf_prune.hub import ModelSource
from hf_prune.latency import median_latencies_in_turns

EXAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"
QUICK = {"models": ["cifar_resnet20"], "image_sizes": [32], "latency_batch_size": 8, "rounds": 1,
         "min_run_time": 0.05, "max_train_samples": 64}


@dataclass
class LatencyTargetArguments:
    output_dir: str = field(default="outputs/latency_target", metadata={"help": "Runs, results.jsonl and results.md."})
    models: list[str] = field(default_factory=lambda: ["cifar_resnet56", "resnet18"], metadata={"help": "timm names."})
    image_sizes: list[int] = field(default_factory=lambda: [32, 64], metadata={"help": "One input size per model."})
    methods: list[str] = field(default_factory=lambda: ["magnitude"], metadata={"help": "Pruning methods to run."})
    target: float = field(default=0.5, metadata={"help": "target_latency_reduction of every run."})
    latency_batch_size: int = field(default=64, metadata={"help": "Batch of the profile and of the timings."})
    threads: int = field(default=1, metadata={"help": "Intra-op threads of the runs and the timings."})
    rounds: int = field(default=5, metadata={"help": "Alternations of dense and slim timings."})
    min_run_time: float = field(default=0.5, metadata={"help": "Seconds of repeats behind each timing."})
    max_steps: int = field(default=8, metadata={"help": "Training steps of each run (the prune falls at a quarter)."})
    max_train_samples: int | None = field(default=512, metadata={"help": "Truncate builtin:mnist5k."})
    quick: bool = field(default=False, metadata={"help": f"The tiny setting: {QUICK}."})

    def __post_init__(self) -> None:
        if self.quick:
            for name, value in QUICK.items():
                setattr(self, name, value)
        if len(self.image_sizes) != len(self.models):
            raise ValueError(f"give one image size per model: {len(self.models)} models, {len(self.image_sizes)} sizes")


def prune_to_target(model: str, image_size: int, method: str, options: LatencyTargetArguments) -> tuple[Path, dict]:
    """One run of the example script; its output folder and pruning report."""
    output_dir = Path(options.output_dir) / "runs" / f"{model}-{image_size}px-{method}-{options.target}"
    argv = [
        "--output_dir", str(output_dir), "--model_name_or_path", model, "--image_size", str(image_size),
        "--pruning_method", method,
        "--target_latency_reduction", str(options.target), "--latency_batch_size", str(options.latency_batch_size),
        "--layer_prune_limit", "0.9", "--max_steps", str(options.max_steps), "--use_cpu", "--seed", "0",
        "--card_latency", "false", "--disable_tqdm", "true", "--eval_strategy", "no", "--save_strategy", "no",
        "--report_to", "none", "--overwrite_output_dir",
    ]
    if options.max_train_samples:
        argv += ["--max_train_samples", str(options.max_train_samples), "--max_eval_samples", "64"]
    report = runpy.run_path(str(EXAMPLE_SCRIPT))["main"](argv)
    return output_dir, report


def measure(output_dir: Path, report: dict, options: LatencyTargetArguments) -> dict[str, Any]:
    config = json.loads((output_dir / "config.json").read_text())
    input_size = tuple(config["hf_prune"]["input_size"])
    dense = ModelSource.from_config(config).build("cpu")
    slim = AutoPrunedModel.from_pretrained(output_dir)
    dense_ms, slim_ms = median_latencies_in_turns(
        (dense, slim), input_size, options.latency_batch_size, options.rounds, num_threads=options.threads,
        min_run_time=options.min_run_time,
    )
    latency = report["latency"]
    return {
        "dense_ms": dense_ms, "slim_ms": slim_ms, "measured_reduction": 1 - slim_ms / dense_ms,
        "predicted_reduction": latency["predicted_reduction"], "macs_reduction": report["macs_reduction"],
        "in_run_reduction": latency["measured_reduction"],
    }


def table(rows: list[dict[str, Any]], target: float) -> str:
    lines = ["| model | px | method | MACs reduction | predicted latency reduction | measured in the run | "
             "measured latency reduction | dense ms | slim ms | measured - target |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['method']} | {r['macs_reduction']:.1%} | "
            f"{r['predicted_reduction']:.1%} | {r['in_run_reduction']:.1%} | {r['measured_reduction']:.1%} | "
            f"{r['dense_ms']:.2f} | {r['slim_ms']:.2f} | {100 * (r['measured_reduction'] - target):+.1f} points |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(LatencyTargetArguments).parse_args_into_dataclasses(args=argv)
    torch.set_num_threads(options.threads)
    rows = []
    for model, image_size in zip(options.models, options.image_sizes):
        for method in options.methods:
            output_dir, report = prune_to_target(model, image_size, method, options)
            rows.append({"model": model, "image_size": image_size, "method": method,
                         **measure(output_dir, report, options)})
    result = table(rows, options.target)
    out = Path(options.output_dir)
    (out / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "results.md").write_text(result + "\n")
    print(result)
    return result


if __name__ == "__main__":
    main()
