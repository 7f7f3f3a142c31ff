"""OCSPruner vs dense training vs one-shot magnitude pruning, side by side in one run.

Each method trains the same model on the same data with the same epochs and seed through
``scripts/prune_image_classification.py``. Prints a markdown table and writes ``results.json``:

    python benchmarks/benchmark_ocsp.py --output_dir outputs/benchmark_ocsp
"""

from __future__ import annotations

import json
import os
import runpy
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

# A program, not a package: its main(argv) -> report is loaded by path.
EXAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"
run_example = runpy.run_path(str(EXAMPLE_SCRIPT))["main"]


@dataclass
class BenchmarkArguments:
    output_dir: str = field(default="outputs/benchmark_ocsp", metadata={"help": "Where runs and results go."})
    model_name_or_path: str = field(default="cifar_resnet56")
    dataset_name: str = field(default="builtin:mnist5k")
    num_train_epochs: float = field(default=8)
    target_flops_reduction: float = field(default=0.5)
    seed: int = field(default=0)
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    methods: list[str] = field(default_factory=lambda: ["none", "ocsp", "magnitude"])


def run(args: BenchmarkArguments, method: str) -> dict:
    argv = [
        "--output_dir", os.path.join(args.output_dir, method),
        "--model_name_or_path", args.model_name_or_path,
        "--dataset_name", args.dataset_name,
        "--num_train_epochs", str(args.num_train_epochs),
        "--target_flops_reduction", str(args.target_flops_reduction),
        "--seed", str(args.seed),
        "--pruning_method", method,
        "--disable_tqdm", "true",
        "--eval_strategy", "no",
        "--logging_strategy", "no",
        "--eval_around_prune", "false",
    ]
    if args.max_train_samples:
        argv += ["--max_train_samples", str(args.max_train_samples)]
    return run_example(argv)


def summarize(method: str, report: dict, dense_runtime: float) -> dict:
    event = (report["pruning_events"] or [None])[0]
    state = report["method_state"]
    search_seconds = state.get("search_seconds")
    return {
        "method": method,
        "top1": report["pruned"]["top1"],
        "macs_m": report["pruned"]["macs"] / 1e6,
        "params_m": report["pruned"]["params"] / 1e6,
        "macs_reduction": report["macs_reduction"],
        "train_s": report["train_runtime"],
        "wall_ratio_to_dense": report["train_runtime"] / dense_runtime,
        "pruned_epoch": event["epoch"] if event else None,
        "search_s": search_seconds,
        "search_share": search_seconds / event["train_seconds"] if event and search_seconds is not None else None,
    }


def table(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        "| method | top-1 % | MACs (M) | params (M) | MACs reduction | train s | x dense | pruned at epoch | search share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {fmt(r['top1'] * 100, '.2f')} | {r['macs_m']:.2f} | {r['params_m']:.3f} | "
            f"{r['macs_reduction']:.1%} | {r['train_s']:.1f} | {r['wall_ratio_to_dense']:.2f} | "
            f"{fmt(r['pruned_epoch'], '.2f')} | {fmt(r['search_share'], '.2%')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    if args.methods[0] != "none":
        raise ValueError("--methods must start with 'none': the dense run is the reference for the wall-time ratio")
    reports = {method: run(args, method) for method in args.methods}
    dense_runtime = reports["none"]["train_runtime"]
    rows = [summarize(method, report, dense_runtime) for method, report in reports.items()]
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({"arguments": vars(args), "rows": rows}, f, indent=2)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
