"""Throughput of one 3x3 convolution by channel count: are pruned (arbitrary) widths slower per MAC?

CPU convolution kernels (oneDNN) work on blocks of channels (16 floats with AVX-512), so a width between
two multiples can cost as much as the next one. This times ``nn.Conv2d(c, c, 3)`` at the three
resolutions of a CIFAR ResNet for the dense width, widths a prune leaves (e.g. 22 of 32) and nearby
multiples of 8::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_conv_widths.py
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import HfArgumentParser

from hf_prune import count_macs_params
from hf_prune.latency import measure_latency_ms, memory_format_named


@dataclass
class ConvWidthArguments:
    stages: list[str] = field(
        default_factory=lambda: ["32:16,11,12,8", "16:32,22,24,16", "8:64,45,48,32"],
        metadata={"help": "'resolution:width,width,...' per stage; widths are input = output channels."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward."})
    threads: int = field(default=1, metadata={"help": "Intra-op threads of every measurement."})
    min_run_time: float = field(default=1.0, metadata={"help": "Seconds of repeats each median is taken over."})
    memory_format: str = field(
        default="contiguous_format", metadata={"help": "torch memory format of weights and inputs, e.g. channels_last."}
    )

    def __post_init__(self) -> None:
        memory_format_named(self.memory_format)


def measure(resolution: int, width: int, options: ConvWidthArguments) -> dict:
    memory_format = memory_format_named(options.memory_format)
    conv = nn.Conv2d(width, width, 3, padding=1, bias=False).to(memory_format=memory_format)
    macs, _ = count_macs_params(conv, torch.zeros(options.batch_size, width, resolution, resolution))
    milliseconds = measure_latency_ms(conv, (width, resolution, resolution), options.batch_size,
                                      num_threads=options.threads, min_run_time=options.min_run_time,
                                      memory_format=memory_format)
    return {"resolution": resolution, "width": width, "macs": macs, "ms": milliseconds, "mmac_per_ms": macs / 1e6 / milliseconds}


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(ConvWidthArguments).parse_args_into_dataclasses(args=argv)
    rows = []
    for stage in options.stages:
        resolution, widths = stage.split(":")
        rows += [measure(int(resolution), int(width), options) for width in widths.split(",")]
    lines = [f"| resolution | channels | MACs (M, batch {options.batch_size}) | ms | MMAC/ms |", "|---" * 5 + "|"]
    lines += [f"| {r['resolution']} | {r['width']} | {r['macs'] / 1e6:.1f} | {r['ms']:.2f} | {r['mmac_per_ms']:.0f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
