"""Benchmark 2 CPU processes (gloo DDP) against 1: training wall time and one LAASP search step.

* train: ``scripts/prune_image_classification.py`` (``cifar_resnet20`` on ``builtin:mnist5k``, one-shot
  magnitude pruning) with the same global batch, once as one process and once under
  ``torchrun --nproc_per_node 2`` (half the batch per process); the Trainer's ``train_runtime``
  and the whole command's wall time.
* laasp_step: the candidates of one LAASP search step (``benchmarks/benchmark_laasp.py``'s setup)
  scored on the same subset by 1 process and by 2 (each scores its half; loss sums all-reduced).

Three setups: 1 process with 2 threads (the same cores as 2 processes), 1 process with 1 thread
(one rank's share), and 2 processes with 1 thread each. Prints a markdown table::

    python benchmarks/benchmark_distributed.py --output outputs/benchmark_distributed.json
"""

from __future__ import annotations

import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import HfArgumentParser, set_seed

ROOT = Path(__file__).resolve().parents[1]
# A sibling program, not a package: its LAASP step setup is loaded by path.
step_setup = runpy.run_path(str(ROOT / "benchmarks" / "benchmark_laasp.py"))["step_setup"]


@dataclass
class BenchmarkArguments:
    mode: str = field(default="all", metadata={"help": "all, train or laasp_step."})
    output: str = field(default="outputs/benchmark_distributed.json", metadata={"help": "JSON file for the results."})
    global_batch_size: int = field(default=128, metadata={"help": "train: images per optimizer step, all processes."})
    max_steps: int = field(default=30, metadata={"help": "train: optimizer steps."})
    laasp_model: str = field(default="cifar_resnet56", metadata={"help": "laasp_step: the model."})
    subset_size: int = field(default=512, metadata={"help": "laasp_step: subset images (split across processes)."})
    batch_size: int = field(default=64, metadata={"help": "laasp_step: images per forward."})
    screen_fraction: float = field(
        default=0.0,
        metadata={"help": "laasp_step: 0 scores every candidate on the whole subset (the same work for 1 and 2 "
                  "processes; screening is per process, so its share would differ)."},
    )
    repeats: int = field(default=3, metadata={"help": "laasp_step: timed steps (median reported)."})
    seed: int = 0
    worker_output: str | None = field(default=None, metadata={"help": "Internal: run as a laasp_step worker."})


# (label, processes, torch threads per process): 2 x 1 uses the same cores as 1 x 2; 1 x 1 is one rank's share.
SETUPS = (("1 process x 2 threads", 1, 2), ("1 process x 1 thread", 1, 1), ("2 processes x 1 thread", 2, 1))


def _run(command: list[str], processes: int, threads: int) -> float:
    """Run ``command`` (a script and its flags) as 1 process or under torchrun; return its wall seconds."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads),
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run(launcher + command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - started


def benchmark_train(options: BenchmarkArguments) -> dict[str, Any]:
    """The demo job (one-shot magnitude prune included) with the same global batch in every setup."""
    results = {}
    for label, processes, threads in SETUPS:
        with tempfile.TemporaryDirectory(prefix="dist-bench-") as output_dir:
            command = [
                str(ROOT / "scripts" / "prune_image_classification.py"), "--output_dir", output_dir, "--use_cpu",
                "--per_device_train_batch_size", str(options.global_batch_size // processes),
                "--max_steps", str(options.max_steps), "--eval_strategy", "no", "--eval_around_prune", "false",
                "--disable_tqdm", "true", "--seed", str(options.seed), "--logging_steps", "1000",
            ]
            wall = _run(command, processes, threads)
            report = json.loads(Path(output_dir, "pruning_report.json").read_text())
        results[label] = {"train_runtime": report["train_runtime"], "wall": wall}
    return results


def benchmark_laasp_step(options: BenchmarkArguments) -> dict[str, Any]:
    """One search step's candidate scoring in every setup, on the same subset."""
    results = {}
    for label, processes, threads in SETUPS:
        with tempfile.TemporaryDirectory(prefix="dist-bench-laasp-") as folder:
            output = os.path.join(folder, "step.json")
            _run([__file__, "--worker_output", output, *_flags(options)], processes, threads)
            results[label] = json.loads(Path(output).read_text())
    return results


def _flags(options: BenchmarkArguments) -> list[str]:
    return [f"--{k}={v}" for k, v in asdict(options).items() if v is not None and k != "worker_output"]


def laasp_step_worker(options: BenchmarkArguments) -> None:
    """Score one step's candidates ``repeats`` times in this process (of a torchrun job or alone)."""
    state = PartialState(cpu=True)  # joins the torchrun process group (gloo) when there is one
    set_seed(options.seed)  # the same random init on every process: the same candidates
    method, context, candidates = step_setup(options.laasp_model, options.subset_size, options.seed,
                                             laasp_batch_size=options.batch_size, laasp_race=0.0,
                                             laasp_screen_fraction=options.screen_fraction, laasp_screen_keep=8)
    method.evaluate(context, candidates[:1])  # builds this process's share of the subset: not a step's cost
    seconds = []
    for _ in range(options.repeats):
        state.wait_for_everyone()
        started = time.perf_counter()
        losses, _ = method.evaluate(context, candidates)
        seconds.append(time.perf_counter() - started)
    best = min(range(len(candidates)), key=lambda i: (losses[i], i))
    if state.is_main_process:
        Path(options.worker_output).write_text(json.dumps({
            "seconds": statistics.median(seconds), "candidates": len(candidates),
            "chosen": [candidates[best].group, list(candidates[best].removed)],
            "images_per_process": sum(len(b["labels"]) for b in method._subset),
        }))


def format_table(results: dict[str, Any], options: BenchmarkArguments) -> str:
    """The results as a markdown table: seconds per setup, and 2 processes relative to each 1-process setup."""
    labels = [label for label, _, _ in SETUPS]
    lines = ["| measurement | " + " | ".join(labels) + " | 2p / (1p x 2t) | 2p / (1p x 1t) |",
             "|---" * (len(labels) + 3) + "|"]

    def row(name: str, seconds: list[float]) -> str:
        cells = " | ".join(f"{s:.2f}" for s in seconds)
        return f"| {name} | {cells} | {seconds[2] / seconds[0]:.2f} | {seconds[2] / seconds[1]:.2f} |"

    train = results.get("train")
    if train:
        setting = f"{options.max_steps} steps, global batch {options.global_batch_size}"
        lines.append(row(f"train_runtime s ({setting})", [train[label]["train_runtime"] for label in labels]))
        lines.append(row(f"command wall s ({setting})", [train[label]["wall"] for label in labels]))
    step = results.get("laasp_step")
    if step:
        first = step[labels[0]]
        lines.append(row(f"LAASP step s ({options.laasp_model}, {first['candidates']} candidates, "
                         f"{options.subset_size} images)", [step[label]["seconds"] for label in labels]))
        same = all(step[label]["chosen"] == first["chosen"] for label in labels)
        lines.append(f"\nLAASP: the same choice in every setup: {same}; images per process "
                     + ", ".join(str(step[label]["images_per_process"]) for label in labels) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    (options,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    if options.worker_output:
        laasp_step_worker(options)
        return {}
    results: dict[str, Any] = {}
    if options.mode in ("all", "train"):
        results["train"] = benchmark_train(options)
    if options.mode in ("all", "laasp_step"):
        results["laasp_step"] = benchmark_laasp_step(options)
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    Path(options.output).write_text(json.dumps(results, indent=2))
    print(format_table(results, options))
    return results


if __name__ == "__main__":
    main()
