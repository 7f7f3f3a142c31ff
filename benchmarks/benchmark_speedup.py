"""Real speed-up per MACs cut: pruned widths rounded (``round_to auto``) or not (``1``), by method, ranking and target.

For every model, method, target and ``round_to``, a short run through the example script prunes the
model (widths matter here, not accuracy: a few hundred images, one epoch, a cheap LAASP search).
Then, in this one process, the dense architecture and each slim model are timed alternately (eager,
``batch_size`` images, ``threads`` threads), so that a load change on the machine hits both, in each
memory format of ``memory_formats`` (PyTorch's default NCHW, and ``channels_last``, the layout oneDNN's
CPU convolutions run without reordering; both models in the same format), and with BatchNorm as trained
(``kept``) or ``folded`` into the convolutions before it, as an exported inference graph has it::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_speedup.py --output_dir outputs/speedup

On a GPU, ``--device cuda --dtypes float32 bfloat16 float16 --batch_size 128`` times both models there in
each precision (the pruning runs still train on the CPU; ``torch.utils.benchmark`` synchronizes CUDA).

With ``--rankings saliency latency`` the one-shot methods also run with ``latency_aware_ranking`` (units ranked
by saliency per predicted millisecond saved; the runs of a model share the first one's latency profile).

Runs already saved under ``<output_dir>/runs`` are reused, so a second call only re-times. ``--run_dirs``
times slim models saved elsewhere instead (e.g. ``benchmark.py``'s runs, trained for real: the short runs here
train too little for LAASP's subset losses to mean much, so their widths say little about a real run's). The table
(MACs ratio, layer outputs ratio, dense and slim ms, speed-up, speed-up / MACs ratio) is printed and
written to ``<output_dir>/speedup.md``. The layer outputs ratio (elements written by convolutions and
linear layers, dense / slim) is where the speed-up tends when narrow layers are memory-bound: MACs
fall with the square of the widths, the traffic only linearly.
"""

from __future__ import annotations

import copy
import itertools
import json
import runpy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_prune import AutoPrunedModel, ModelSource, count_macs_params
from hf_prune.hub.model_dir import write_text_atomic
from hf_prune.latency import fold_batchnorm, median_latencies_in_turns, memory_format_named
from hf_prune.structure.counting import count_layer_outputs
from hf_prune.trainer.pruning_state import TRAINING_ARGS_NAME

EXAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"
run_example = runpy.run_path(str(EXAMPLE_SCRIPT))["main"]


@dataclass
class SpeedupArguments:
    output_dir: str = field(default="outputs/speedup", metadata={"help": "Runs go to runs/, the table to speedup.md."})
    models: list[str] = field(
        default_factory=lambda: ["cifar_resnet56:32", "resnet18:64"],
        metadata={"help": "'timm name:input pixels' of every model."},
    )
    methods: list[str] = field(default_factory=lambda: ["magnitude", "ocsp", "laasp"])
    targets: list[float] = field(default_factory=lambda: [0.5, 0.8])
    round_to: list[str] = field(default_factory=lambda: ["1", "auto"])
    rankings: list[str] = field(
        default_factory=lambda: ["saliency"],
        metadata={"help": "'saliency' (the methods' own ranking) and/or 'latency' (latency_aware_ranking; not laasp); "
                          "the latency runs of a model share one profile, measured by the first."},
    )
    train_samples: int = field(default=256, metadata={"help": "Training images of every run (builtin:mnist5k)."})
    laasp_args: str = field(
        default="--laasp_flops_step 0.05 --laasp_subset_size 64 --laasp_recovery_epochs 0",
        metadata={"help": "Flags that keep the LAASP runs cheap."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per timed forward."})
    threads: int = field(default=1, metadata={"help": "Intra-op threads of every measurement."})
    rounds: int = field(default=5, metadata={"help": "Alternations of dense and slim timings; medians are reported."})
    min_run_time: float = field(default=0.5, metadata={"help": "Seconds of repeats in each timing."})
    memory_formats: list[str] = field(
        default_factory=lambda: ["contiguous_format", "channels_last"],
        metadata={"help": "torch memory formats both models are timed in (a row each)."},
    )
    batchnorm: list[str] = field(
        default_factory=lambda: ["kept", "folded"],
        metadata={"help": "Time both models with their BatchNorm layers kept, or folded into the layer before "
                          "(torch.fx fuse, as in an exported inference graph); a row each."},
    )
    run_dirs: list[str] = field(
        default_factory=list,
        metadata={"help": "Saved slim models to time instead of pruning short runs (e.g. benchmark.py's runs/*, whose "
                          "widths come from real training); rows are labelled from their config.json and "
                          "training_args.json."},
    )
    device: str = field(
        default="cpu",
        metadata={"help": "Where both models are timed, e.g. cuda (the short pruning runs train on the CPU)."},
    )
    dtypes: list[str] = field(
        default_factory=lambda: ["float32"],
        metadata={"help": "Precisions both models are timed in (float32, bfloat16, float16: weights and inputs "
                          "cast); a row each."},
    )

    def __post_init__(self) -> None:
        for name in self.memory_formats:
            memory_format_named(name)
        unknown = set(self.batchnorm) - {"kept", "folded"}
        if unknown:
            raise ValueError(f"--batchnorm takes 'kept' and/or 'folded', not {sorted(unknown)}")
        for name in self.dtypes:
            if not isinstance(getattr(torch, name, None), torch.dtype) or not getattr(torch, name).is_floating_point:
                raise ValueError(
                    f"--dtypes takes torch floating-point dtypes such as float32 bfloat16 float16, not '{name}'"
                )
        if torch.device(self.device).type != "cpu" and not torch.accelerator.is_available():
            raise ValueError(f"--device {self.device}: this machine has no accelerator; time on --device cpu")
        unknown = set(self.rankings) - {"saliency", "latency"}
        if unknown:
            raise ValueError(f"--rankings takes 'saliency' and/or 'latency', not {sorted(unknown)}")


def prune_once(
    model: str, size: int, method: str, target: float, round_to: str, ranking: str, options: SpeedupArguments
) -> Path:
    """The saved slim model of one short run (trained once; reused when it is already there)."""
    suffix = "-latency" if ranking == "latency" else ""
    run_dir = Path(options.output_dir) / "runs" / f"{model}-{size}-{method}-{target}-{round_to}{suffix}"
    if (run_dir / "config.json").exists():
        return run_dir
    argv = ["--output_dir", str(run_dir), "--model_name_or_path", model, "--image_size", str(size),
            "--pruning_method", method, "--target_flops_reduction", str(target),
            "--layer_prune_limit", str(max(0.75, target + 0.1)), "--round_to", round_to,
            "--num_train_epochs", "1", "--max_train_samples", str(options.train_samples), "--max_eval_samples", "64",
            "--per_device_train_batch_size", "32", "--use_cpu", "--card_latency", "false", "--disable_tqdm", "true",
            "--report_to", "none", "--save_strategy", "no", "--seed", "0"]
    if method == "laasp":
        argv += options.laasp_args.split()
    profile = Path(options.output_dir) / "profiles" / f"{model}-{size}.json"
    if ranking == "latency":
        argv += ["--latency_aware_ranking", "true"] + (["--latency_profile", str(profile)] if profile.exists() else [])
    run_example(argv)
    if ranking == "latency" and not profile.exists():
        profile.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "latency_profile.json", profile)
    return run_dir


def measure(run_dir: Path, options: SpeedupArguments) -> list[dict]:
    """MACs ratio and alternated timings of one slim model against its dense architecture (random weights),
    a row per BatchNorm treatment, memory format and dtype."""
    config = json.loads((run_dir / "config.json").read_text())
    input_size = tuple(config["hf_prune"]["input_size"])
    slim = AutoPrunedModel.from_pretrained(run_dir).eval()
    dense = ModelSource.from_config(config).build("cpu").eval()
    example = torch.zeros(1, *input_size)
    macs_ratio = count_macs_params(dense, example)[0] / count_macs_params(slim, example)[0]
    outputs_ratio = count_layer_outputs(dense, example) / count_layer_outputs(slim, example)
    rows = []
    for batchnorm in options.batchnorm:
        pair = (dense, slim) if batchnorm == "kept" else (fold_batchnorm(dense), fold_batchnorm(slim))
        for name, dtype in itertools.product(options.memory_formats, options.dtypes):
            memory_format = memory_format_named(name)
            cast = [copy.deepcopy(model).to(options.device, getattr(torch, dtype), memory_format=memory_format)
                    for model in pair]
            dense_ms, slim_ms = median_latencies_in_turns(
                cast, input_size, options.batch_size, options.rounds, num_threads=options.threads,
                min_run_time=options.min_run_time, memory_format=memory_format,
            )
            rows.append({"batchnorm": batchnorm, "memory_format": name, "device": options.device, "dtype": dtype,
                         "macs_ratio": macs_ratio, "outputs_ratio": outputs_ratio, "dense_ms": dense_ms,
                         "slim_ms": slim_ms})
    return rows


def saved_run_key(run_dir: Path) -> dict:
    """The row labels of a slim model a training run saved (its ``config.json`` and ``training_args.json``):
    model, input pixels, method, ranking, target, round_to and seed."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        args = json.loads((run_dir / TRAINING_ARGS_NAME).read_text())
        model, size = ModelSource.from_config(config).architecture, config["hf_prune"]["input_size"][-1]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{run_dir} is not the output_dir of a finished pruning run ({error})") from None
    return {"model": model, "size": size, "method": args["pruning_method"],
            "ranking": "latency" if args["latency_aware_ranking"] else "saliency",
            "target": args["target_latency_reduction"] or args["target_flops_reduction"],
            "round_to": args["round_to"], "seed": args["seed"]}


def table(rows: list[dict], batch_size: int) -> str:
    lines = [f"| model | px | method | ranking | target | round_to | seed | BatchNorm | memory format | device | dtype | "
             f"MACs ratio | layer outputs ratio | dense ms (bs{batch_size}) | slim ms | speed-up | speed-up ÷ MACs ratio |",
             "|---" * 17 + "|"]
    for r in rows:
        speedup = r["dense_ms"] / r["slim_ms"]
        lines.append(f"| {r['model']} | {r['size']} | {r['method']} | {r['ranking']} | {r['target']:.0%} | "
                     f"{r['round_to']} | {r['seed']} | {r['batchnorm']} | {r['memory_format']} | {r['device']} | "
                     f"{r['dtype']} | {r['macs_ratio']:.2f}x | {r['outputs_ratio']:.2f}x | {r['dense_ms']:.2f} | "
                     f"{r['slim_ms']:.2f} | {speedup:.2f}x | {speedup / r['macs_ratio']:.2f} |")
    return "\n".join(lines)


def short_runs(options: SpeedupArguments) -> list[tuple[dict, Path]]:
    """Row labels and saved slim model of every short run of the grid (pruned here, or reused)."""
    runs = []
    for spec in options.models:
        model, size = spec.rsplit(":", 1)
        for method, target in itertools.product(options.methods, options.targets):
            for round_to, ranking in itertools.product(options.round_to, options.rankings):
                if ranking == "latency" and method == "laasp":
                    continue  # laasp ranks candidates by subset loss
                key = {"model": model, "size": int(size), "method": method, "ranking": ranking, "target": target,
                       "round_to": round_to, "seed": 0}
                runs.append((key, prune_once(model, int(size), method, target, round_to, ranking, options)))
    return runs


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(SpeedupArguments).parse_args_into_dataclasses(args=argv)
    if options.run_dirs:
        runs = [(saved_run_key(Path(run_dir)), Path(run_dir)) for run_dir in options.run_dirs]
    else:
        runs = short_runs(options)
    result = table([{**key, **row} for key, run_dir in runs for row in measure(run_dir, options)], options.batch_size)
    Path(options.output_dir).mkdir(parents=True, exist_ok=True)  # with --run_dirs nothing has made it yet
    write_text_atomic(Path(options.output_dir) / "speedup.md", result + "\n")
    print(result)
    return result


if __name__ == "__main__":
    main()
