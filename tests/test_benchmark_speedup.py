"""benchmarks/benchmark_speedup.py: dense and slim timed in turns, MACs and layer outputs ratios from independent counts."""

from __future__ import annotations

import pytest
import timm
import torch

import hf_prune  # registers the CIFAR models
import hf_prune.latency
from hf_prune import ModelSource, StructureGraph, count_macs_params, save_pretrained
from hf_prune.structure.counting import count_layer_outputs

INPUT = torch.zeros(1, 3, 32, 32)
# cifar_resnet20 at 32 px, by hand: stem and 6 convs at 16x32x32, 6 at 32x16x16 and 6 at 64x8x8, the
# two 1x1 projection shortcuts (32x16x16, 64x8x8), 10 logits.
RESNET20_OUTPUTS = 7 * 16 * 32 * 32 + 7 * 32 * 16 * 16 + 7 * 64 * 8 * 8 + 10


def test_layer_outputs_count_every_convolution_and_linear_output():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 3, stride=2, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 10)).train()
    assert count_layer_outputs(model, torch.zeros(2, 3, 8, 8)) == 2 * (8 * 8 * 8 + 4 * 4 * 4 + 10)
    assert model.training and not model[0]._forward_hooks  # mode restored, hooks removed


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
    assert [(row["batchnorm"], row["memory_format"]) for row in rows] == [
        ("kept", "contiguous_format"), ("kept", "channels_last"), ("folded", "contiguous_format"),
        ("folded", "channels_last")]
    halved_outputs = (RESNET20_OUTPUTS - 10) // 2 + 10  # every group halved, the logits kept
    for row in rows:
        assert row["macs_ratio"] == dense_macs / count_macs_params(model, INPUT)[0] and row["macs_ratio"] > 2
        assert row["outputs_ratio"] == RESNET20_OUTPUTS / halved_outputs
    line = script.table([{"model": "m", "size": 32, "method": "ocsp", "ranking": "latency", "target": 0.5, "round_to": "auto",
                          "seed": 2, "batchnorm": "folded", "memory_format": "channels_last", "device": "cuda",
                          "dtype": "bfloat16", "macs_ratio": 2.0, "outputs_ratio": 1.5, "dense_ms": 8.0,
                          "slim_ms": 5.0}], 64).splitlines()[-1]
    assert line == ("| m | 32 | ocsp | latency | 50% | auto | 2 | folded | channels_last | cuda | bfloat16 | 2.00x | 1.50x | "
                    "8.00 | 5.00 | 1.60x | 0.80 |")


def test_saved_training_runs_are_labelled_from_their_own_files_and_timed(load_script, make_trainer, tmp_path,
                                                                               monkeypatch):
    script = load_script("benchmarks/benchmark_speedup.py")
    trainer = make_trainer(tmp_path / "run", pruning_method="magnitude", max_steps=2, seed=3, round_to="4",
                           target_flops_reduction=0.4)
    trainer.train()
    trainer.save_model()
    assert script.saved_run_key(tmp_path / "run") == {
        "model": "cifar_resnet20", "size": 32, "method": "magnitude", "ranking": "saliency", "target": 0.4,
        "round_to": "4", "seed": 3}
    with pytest.raises(ValueError, match="is not the output_dir of a finished pruning run"):
        script.saved_run_key(tmp_path)
    monkeypatch.setattr(script, "median_latencies_in_turns", lambda models, *args, **kwargs: [4.0, 2.0])
    script.main(["--output_dir", str(tmp_path / "new" / "table"), "--run_dirs", str(tmp_path / "run"),
                 "--memory_formats", "contiguous_format", "--batchnorm", "kept"])
    (row,) = (tmp_path / "new" / "table" / "speedup.md").read_text().splitlines()[2:]  # a fresh output_dir is made
    assert row.startswith("| cifar_resnet20 | 32 | magnitude | saliency | 40% | 4 | 3 | kept | contiguous_format | cpu |")
    assert " 4.00 | 2.00 | 2.00x |" in row


def test_each_dtype_times_both_models_cast_to_it(load_script, tmp_path, monkeypatch):
    script = load_script("benchmarks/benchmark_speedup.py")
    model = timm.create_model("cifar_resnet20", num_classes=10).eval()
    source = ModelSource.from_model(model)
    graph = StructureGraph(model, INPUT)
    graph.apply({g.name: list(range(g.num_units // 2)) for g in graph.groups})
    save_pretrained(model, tmp_path, source=source, pruning={"input_size": [3, 32, 32]})
    timed = []

    def fake_turns(models, input_size, batch_size, rounds, **kwargs):
        timed.append([{p.dtype for p in m.parameters()} for m in models])
        return [4.0, 2.0]

    monkeypatch.setattr(script, "median_latencies_in_turns", fake_turns)
    options = script.SpeedupArguments(batchnorm=["kept"], memory_formats=["contiguous_format"],
                                      dtypes=["float32", "bfloat16"])
    rows = script.measure(tmp_path, options)
    assert [(row["device"], row["dtype"]) for row in rows] == [("cpu", "float32"), ("cpu", "bfloat16")]
    assert timed == [[{torch.float32}] * 2, [{torch.bfloat16}] * 2]
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the casts were copies
    conv = torch.nn.Conv2d(3, 4, 3).to(torch.bfloat16)  # inputs follow the model's dtype (a float32 batch would fail)
    assert hf_prune.latency.measure_latency_ms(conv, (3, 8, 8), 2, min_run_time=0.001) > 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"memory_formats": ["nhwc"]}, "'nhwc' is not a torch memory format"),
    ({"batchnorm": ["kept", "fused"]}, r"--batchnorm takes 'kept' and/or 'folded', not \['fused'\]"),
    ({"rankings": ["saliency", "speed"]}, r"--rankings takes 'saliency' and/or 'latency', not \['speed'\]"),
    ({"dtypes": ["float32", "int8"]}, "--dtypes takes torch floating-point dtypes .* not 'int8'"),
])
def test_unknown_timing_settings_are_refused_by_name(load_script, overrides, message):
    script = load_script("benchmarks/benchmark_speedup.py")
    with pytest.raises(ValueError, match=message):
        script.SpeedupArguments(**overrides)


def test_folding_batchnorm_removes_every_batchnorm_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=10)
    graph = StructureGraph(model, INPUT)
    graph.apply({g.name: list(range(g.num_units // 2)) for g in graph.groups})
    model.train()(torch.randn(16, 3, 32, 32))  # running statistics away from the identity
    folded = hf_prune.latency.fold_batchnorm(model)
    assert model.training  # folded on a copy
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # stem, two per basic block, two projection shortcuts
    assert len(batchnorms) == 1 + 9 * 2 + 2 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    images = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(folded(images), model.eval()(images), rtol=1e-4, atol=1e-5)
    assert count_macs_params(folded, INPUT)[0] == count_macs_params(model, INPUT)[0]


def test_a_model_torch_fx_cannot_trace_is_refused_with_the_fix():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm(self.conv(x)) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="DataDependent cannot be traced by torch.fx .*time it as it is instead"):
        hf_prune.latency.fold_batchnorm(DataDependent())


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


@pytest.mark.skipif(torch.accelerator.is_available(), reason="the refusal is for machines without an accelerator")
def test_an_accelerator_device_is_refused_on_a_machine_without_one(load_script):
    script = load_script("benchmarks/benchmark_speedup.py")
    with pytest.raises(ValueError, match="--device cuda: this machine has no accelerator; time on --device cpu"):
        script.SpeedupArguments(device="cuda")
