"""benchmarks/benchmark_speedup.py: dense and slim timed in turns, MACs ratio from independent counts."""

from __future__ import annotations

import pytest
import timm
import torch

import hf_prune  # registers the CIFAR models
import hf_prune.latency
from hf_prune import ModelSource, StructureGraph, count_macs_params, save_pretrained

INPUT = torch.zeros(1, 3, 32, 32)


def test_dense_and_slim_are_timed_in_turns_and_the_medians_reported(monkeypatch):
    dense, slim, calls = torch.nn.Identity(), torch.nn.ReLU(), []
    timings = {dense: iter([4.0, 9.0, 5.0]), slim: iter([1.0, 2.0, 8.0])}

    def fake_latency(model, input_size, batch_size, num_threads, min_run_time, memory_format):
        calls.append(model)
        return next(timings[model])

    monkeypatch.setattr(hf_prune.latency, "measure_latency_ms", fake_latency)
    assert hf_prune.latency.median_latencies_in_turns((dense, slim), (3, 32, 32), 64, rounds=3) == [5.0, 2.0]
    assert calls == [dense, slim] * 3


def test_measure_counts_the_macs_ratio_against_the_rebuilt_dense_architecture(load_script, tmp_path):
    script = load_script("benchmarks/benchmark_speedup.py")
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=10).eval()
    source, dense_macs = ModelSource.from_model(model), count_macs_params(model, INPUT)[0]
    graph = StructureGraph(model, INPUT)
    graph.apply({g.name: list(range(g.num_units // 2)) for g in graph.groups})
    save_pretrained(model, tmp_path, source=source, pruning={"input_size": [3, 32, 32]})
    options = script.SpeedupArguments(rounds=1, min_run_time=0.01, batch_size=2)
    rows = script.measure(tmp_path, options)
    assert [row["memory_format"] for row in rows] == ["contiguous_format", "channels_last"]
    for row in rows:
        assert row["macs_ratio"] == dense_macs / count_macs_params(model, INPUT)[0] and row["macs_ratio"] > 2
    line = script.table([{"model": "m", "size": 32, "method": "ocsp", "target": 0.5, "round_to": "auto",
                          "memory_format": "channels_last", "macs_ratio": 2.0, "dense_ms": 8.0, "slim_ms": 5.0}],
                        64).splitlines()[-1]
    assert line == "| m | 32 | ocsp | 50% | auto | channels_last | 2.00x | 8.00 | 5.00 | 1.60x | 0.80 |"


def test_an_unknown_memory_format_is_refused_by_name(load_script):
    script = load_script("benchmarks/benchmark_speedup.py")
    with pytest.raises(ValueError, match="'nhwc' is not a torch memory format"):
        script.SpeedupArguments(memory_formats=["nhwc"])


def test_inputs_are_timed_in_the_requested_memory_format():
    layouts = []

    class RecordLayout(torch.nn.Conv2d):
        def forward(self, x):
            layouts.append(x.is_contiguous(memory_format=torch.channels_last))
            return super().forward(x)

    conv = RecordLayout(3, 8, 3).to(memory_format=torch.channels_last)
    hf_prune.latency.measure_latency_ms(conv, (3, 8, 8), 4, min_run_time=0.001, memory_format=torch.channels_last)
    hf_prune.latency.measure_latency_ms(conv, (3, 8, 8), 4, min_run_time=0.001)
    assert layouts[0] and not layouts[-1]
