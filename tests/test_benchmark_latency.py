"""benchmarks/benchmark_latency.py: MACs ratio from independent counts, BatchNorm folding exact."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import ModelSource, StructureGraph, count_macs_params, save_pretrained

INPUT = torch.randn(1, 3, 32, 32)


def _saved(directory: Path, keep_fraction: float) -> int:
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=10)
    source = ModelSource.from_model(model)
    for module in model.modules():  # non-trivial statistics, so folding them is a real change
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    if keep_fraction < 1:
        graph = StructureGraph(model, INPUT)
        graph.apply({g.name: list(range(max(1, int(g.num_units * keep_fraction)))) for g in graph.groups})
    save_pretrained(model.eval(), directory, source=source, pruning={"input_size": [3, 32, 32]})
    return count_macs_params(model, INPUT)[0]


def test_table_puts_measured_speedups_next_to_the_counted_macs_ratio(load_script, tmp_path):
    script = load_script("benchmarks/benchmark_latency.py")
    dense_macs = _saved(tmp_path / "dense", 1.0)
    slim_macs = _saved(tmp_path / "slim", 0.5)
    table = script.main(["--dense_dir", str(tmp_path / "dense"), "--slim_dirs", str(tmp_path / "slim"),
                         "--batch_size", "2", "--min_run_time", "0.01"])
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [r[0] for r in rows] == ["| dense", "| slim"]
    assert rows[1][2] == f"{dense_macs / slim_macs:.2f}x" and rows[0][2] == "1.00x"
    assert all(float(r[-1].rstrip(" |")) < 1e-4 for r in rows)  # folded outputs equal eager ones
    assert all(float(r[3]) > 0 and float(r[6]) > 0 for r in rows)


def test_latency_target_table_sets_every_reduction_against_the_target(load_script):
    script = load_script("benchmarks/benchmark_latency_target.py")
    row = {"model": "cifar_resnet56", "image_size": 32, "method": "magnitude", "macs_reduction": 0.678,
           "predicted_reduction": 0.504, "in_run_reduction": 0.512, "measured_reduction": 0.486,
           "dense_ms": 339.77, "slim_ms": 174.72}
    assert script.table([row], 0.5).splitlines()[-1] == (
        "| cifar_resnet56 | 32 | magnitude | 67.8% | 50.4% | 51.2% | 48.6% | 339.77 | 174.72 | -1.4 points |")
