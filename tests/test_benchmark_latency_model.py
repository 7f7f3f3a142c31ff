"""benchmarks/benchmark_latency_model.py: each term of a prediction read at the slim model's own widths."""

from __future__ import annotations

import pytest
import timm
import torch

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune.structure import latency_model
from hf_prune.structure.latency_model import LatencyProfile, LatencyTable, layer_shapes

INPUT = torch.zeros(1, 3, 32, 32)


def _bilinear_ms(out_width: float, in_width: float) -> float:
    return out_width * in_width / 1000


def _bilinear_profile(num_classes: int) -> LatencyProfile:
    """cifar_resnet20's profile whose every table is out x in / 1000 (exact under bilinear interpolation)."""
    layers = layer_shapes(timm.create_model("cifar_resnet20", num_classes=num_classes), INPUT)
    tables = {}
    for shape in layers.values():
        outs, ins = sorted({1, shape.out_width}), sorted({1, shape.in_width})
        tables[latency_model._table_key(shape)] = LatencyTable(outs, ins, [[_bilinear_ms(o, i) for i in ins] for o in outs])
    return LatencyProfile("cpu", "test", 2, [3, 32, 32], dense_ms=10.0, rest_ms=2.0, layers=layers, tables=tables)


def test_terms_are_read_at_the_slim_widths_and_split_as_predicted(load_script, make_trainer, tmp_path, monkeypatch):
    script = load_script("benchmarks/benchmark_latency_model.py")
    trainer = make_trainer(tmp_path / "run", pruning_method="magnitude", max_steps=2, round_to="4",
                           target_flops_reduction=0.5)
    trainer.train()
    trainer.save_model()
    slim = trainer.model
    # Independent count: every conv/linear of the slim model at its own widths.
    expected = sum(_bilinear_ms(m.weight.shape[0], m.weight.shape[1] * getattr(m, "groups", 1))
                   for m in slim.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    monkeypatch.setattr(script, "time_layer_ms", lambda signature, out_width, in_width, *args: _bilinear_ms(out_width, in_width))
    timed = []

    def fake_turns(models, *args, **kwargs):
        timed.append(models)
        return [10.0, 6.0, 2.0, 1.5]  # dense, slim, dense stubbed, slim stubbed

    monkeypatch.setattr(script, "median_latencies_in_turns", fake_turns)
    profile = _bilinear_profile(slim.get_classifier().out_features)
    options = script.LatencyModelArguments(profile="unused", run_dirs=[str(tmp_path / "run")])
    row = script.diagnose(tmp_path / "run", profile, options)
    dense_layers = sum(s.calls * _bilinear_ms(s.out_width, s.in_width) for s in profile.layers.values())
    assert script.tables_ms(slim, profile, INPUT) == pytest.approx(expected)
    assert script.layers_alone_ms([slim], profile, INPUT, rounds=2) == pytest.approx([expected])
    assert expected < dense_layers
    assert row["tables_slim"] == pytest.approx(1.0) and row["tables_dense"] == pytest.approx(1.0)
    assert row["scale_slim"] == pytest.approx((6.0 - 1.5) / expected)
    assert row["scale_dense"] == pytest.approx((10.0 - 2.0) / dense_layers)
    assert row["rest_kept_measured"] == 1.5 / 2.0 and row["reduction_measured"] == 1 - 6.0 / 10.0
    rest_predicted = row["rest_kept_predicted"] * profile.rest_ms
    predicted = profile.predicted_dense_ms * (1 - row["reduction_predicted"])
    assert rest_predicted + profile.layer_scale * expected == pytest.approx(predicted)
    assert 0 < row["rest_kept_predicted"] < 1  # the rest shrinks with the activations kept
    assert (row["method"], row["target"]) == ("magnitude", "0.5")
    dense_stub, slim_stub = timed[0][2:]  # their layers return stored outputs: the logits ignore the input
    with torch.no_grad():
        assert torch.equal(slim_stub(torch.randn(2, 3, 32, 32)), slim_stub(torch.randn(2, 3, 32, 32)))
    assert dense_stub.conv1.out_channels > slim_stub.conv1.out_channels


def test_a_profile_of_another_device_is_refused_by_name(load_script, tmp_path):
    script = load_script("benchmarks/benchmark_latency_model.py")
    profile = _bilinear_profile(10)
    profile.device = "cuda"
    profile.save(str(tmp_path / "profile.json"))
    with pytest.raises(ValueError, match="measured on 'cuda', but this script times on the CPU"):
        script.main(["--profile", str(tmp_path / "profile.json"), "--run_dirs", str(tmp_path),
                     "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
