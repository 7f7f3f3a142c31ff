"""Dense vs slim forward latency next to the MACs ratio, eager and with BatchNorm folded.

Eager PyTorch runs every BatchNorm, activation and residual add as its own pass over memory; their
cost shrinks with the width, the convolutions' MACs with width squared. Folding BatchNorm into
the convolutions (``hf_prune.latency.fold_batchnorm``: torch.fx's ``fuse``, what an inference export does)
removes one of those passes. Every saved model is loaded with ``AutoPrunedModel``::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_latency.py \\
        --dense_dir outputs/benchmark/runs/cifar_resnet20-none-0.0-0 \\
        --slim_dirs outputs/benchmark/runs/cifar_resnet20-magnitude-0.5-0 outputs/benchmark/runs/cifar_resnet20-magnitude-0.8-0
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import HfArgumentParser

from hf_prune import AutoPrunedModel, count_macs_params
from hf_prune.latency import fold_batchnorm, measure_latency_ms
from hf_prune.models.forward import logits_of


@dataclass
class LatencyArguments:
    dense_dir: str = field(metadata={"help": "A saved dense model (e.g. a benchmark run of method none)."})
    slim_dirs: list[str] = field(metadata={"help": "Saved slim models of the same architecture."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward."})
    threads: int = field(default=1, metadata={"help": "Intra-op threads of every measurement."})
    min_run_time: float = field(default=1.0, metadata={"help": "Seconds of repeats each median is taken over."})


def measure(model_dir: str, options: LatencyArguments) -> dict:
    """MACs, eager and folded latency of one saved model; checks that folding kept the outputs."""
    model = AutoPrunedModel.from_pretrained(model_dir).eval()
    input_size = tuple(json.loads((Path(model_dir) / "config.json").read_text())["hf_prune"]["input_size"])
    example = torch.randn(2, *input_size)
    folded = fold_batchnorm(model)
    with torch.inference_mode():
        fold_error = float((logits_of(model(example)) - logits_of(folded(example))).abs().max())
    macs, _ = count_macs_params(model, example[:1])
    return {
        "model": Path(model_dir).name, "macs": macs, "fold_error": fold_error,
        "eager_ms": _latency(model, input_size, options), "folded_ms": _latency(folded, input_size, options),
    }


def _latency(model: nn.Module, input_size: tuple[int, ...], options: LatencyArguments) -> float:
    return measure_latency_ms(model, input_size, options.batch_size, num_threads=options.threads,
                              min_run_time=options.min_run_time)


def table(dense: dict, slims: list[dict], batch_size: int) -> str:
    lines = [f"| model | MACs (M) | MACs ratio | eager bs{batch_size} ms | speed-up | ÷ MACs ratio | "
             f"BN folded bs{batch_size} ms | speed-up | ÷ MACs ratio | max fold error |", "|---" * 10 + "|"]
    for row in [dense, *slims]:
        ratio = dense["macs"] / row["macs"]
        eager, folded = dense["eager_ms"] / row["eager_ms"], dense["folded_ms"] / row["folded_ms"]
        lines.append(f"| {row['model']} | {row['macs'] / 1e6:.2f} | {ratio:.2f}x | {row['eager_ms']:.2f} | {eager:.2f}x | "
                     f"{eager / ratio:.2f} | {row['folded_ms']:.2f} | {folded:.2f}x | {folded / ratio:.2f} | "
                     f"{row['fold_error']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(LatencyArguments).parse_args_into_dataclasses(args=argv)
    dense = measure(options.dense_dir, options)
    result = table(dense, [measure(d, options) for d in options.slim_dirs], options.batch_size)
    print(result)
    return result


if __name__ == "__main__":
    main()
