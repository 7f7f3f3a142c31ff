"""benchmarks/benchmark.py: resumable grid, aggregation over seeds, the plot."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def benchmark(load_script):
    return load_script("benchmarks/benchmark.py")


def _row(method: str, seed: int, top1: float, macs: int, latency: float, target: float = 0.5) -> dict:
    return {"model": "m", "method": method, "target": target, "seed": seed, "top1": top1, "top1_after_prune": None,
            "macs": macs, "macs_reduction": 1 - macs / 100, "train_wall_s": 10.0, "latency_ms_bs64": latency,
            "run_cpu_s": 40.0 if method == "none" else 30.0}


def test_summary_is_mean_and_std_over_seeds_with_speedup_vs_dense(benchmark):
    rows = [_row("none", 0, 0.90, 100, 8.0, 0.0), _row("none", 1, 0.94, 100, 8.0, 0.0),
            _row("ocsp", 0, 0.80, 50, 4.0), _row("ocsp", 1, 0.90, 50, 6.0)]
    summary = {e["method"]: e for e in benchmark.summarize(rows)}
    assert summary["ocsp"]["top1"] == pytest.approx((0.85, 0.05))
    assert summary["none"]["top1"] == pytest.approx((0.92, 0.02))
    assert summary["ocsp"]["speedup_bs64"] == pytest.approx(8.0 / 5.0)
    assert summary["ocsp"]["macs_ratio"] == pytest.approx(2.0) and summary["ocsp"]["top1_after_prune"] is None
    assert summary["ocsp"]["cuda_speedup_bs64"] is None  # measured on CPU only
    table = benchmark.markdown_table(list(summary.values()))
    assert summary["ocsp"]["cpu_ratio"] == pytest.approx(0.75)
    assert ("| m | ocsp | 1 | 50% | 2 | 85.00 ± 5.00 | n/a / n/a | 50.0 ± 0.0 | n/a | n/a | n/a | 10.0 ± 0.0 | "
            "30.0 ± 0.0 | 0.75x | 1.60x | n/a | 2.00x |") in table


def test_summary_carries_top1_right_before_and_after_the_prune(benchmark):
    rows = [_row("ocsp", s, 0.9, 50, 4.0) | {"top1_before_prune": 0.8 + s / 10, "top1_after_prune": 0.6} for s in (0, 1)]
    summary = benchmark.summarize(rows)[0]
    assert summary["top1_before_prune"] == pytest.approx((0.85, 0.05)) and summary["top1_after_prune"] == (0.6, 0.0)
    assert "| 85.00 ± 5.00 / 60.00 ± 0.00 |" in benchmark.markdown_table([summary])


def test_cuda_speedup_is_reported_when_cuda_latencies_were_measured(benchmark):
    rows = [_row("none", 0, 0.9, 100, 8.0, 0.0) | {"cuda_latency_ms_bs64": 3.0},
            _row("random", 0, 0.7, 25, 2.0) | {"cuda_latency_ms_bs64": 1.5}]
    summary = {e["method"]: e for e in benchmark.summarize(rows)}
    assert summary["random"]["cuda_speedup_bs64"] == pytest.approx(2.0) and summary["random"]["speedup_bs64"] == 4.0
    assert "| 4.00x | 2.00x | 4.00x |" in benchmark.markdown_table([summary["random"]])


def test_finished_runs_are_not_run_again(benchmark, tmp_path):
    options = benchmark.BenchmarkArguments(output_dir=str(tmp_path), models=["m"], methods=["random", "none"],
                                           targets=[0.5, 0.8], seeds=[0, 1], round_to=["1"])
    done = _row("random", 1, 0.5, 50, 4.0, 0.8)  # a row from before the round_to axis: unrounded
    (tmp_path / "results.jsonl").write_text(json.dumps(done) + "\n")
    calls = []

    def fake_run(key, _options):
        calls.append(tuple(key.values()))
        return {"top1": 0.5, "macs": 50}

    rows = benchmark.run_grid(options, fake_run)
    assert ("m", "random", "1", 0.8, 1) not in calls and len(calls) == 2 + 3  # dense x 2 seeds, random: 4 - 1 done
    assert [call[1] for call in calls[:2]] == ["none", "none"]  # first: its top-1 is the pruned cards' reference
    assert len(benchmark.load_rows(tmp_path / "results.jsonl")) == len(rows) == 6
    assert benchmark.run_grid(options, fake_run) and len(calls) == 5  # a second call runs nothing


def test_reports_write_the_table_and_the_plot(benchmark, tmp_path):
    rows = [_row("none", 0, 0.9, 100, 8.0, 0.0), _row("random", 0, 0.7, 20, 3.0, 0.8)]
    table = benchmark.write_reports(rows, str(tmp_path))
    assert (tmp_path / "results.md").read_text().strip() == table
    assert (tmp_path / "accuracy_vs_macs_m.png").stat().st_size > 10_000


def test_quick_mode_overrides_the_grid(benchmark):
    options = benchmark.BenchmarkArguments(quick=True)
    assert options.models == ["cifar_resnet20"] and options.seeds == [0] and "laasp" in options.methods


def test_separation_says_which_differences_exceed_seed_noise(benchmark, tmp_path):
    def rows(method, values, target=0.8):
        return [_row(method, seed, v / 100, 20, 3.0, target) for seed, v in enumerate(values)]

    results = (rows("none", [99.0, 99.2, 98.8], 0.0) + rows("ocsp", [98.0, 98.1, 97.9]) + rows("magnitude", [90.0, 90.1, 89.9])
               + rows("laasp", [95.0, 96.0, 94.0]) + rows("random", [95.5, 94.5, 95.0]) + rows("tp_groupnorm", [97.0]))
    found = {(c["method"], c["baseline"]): c for c in benchmark.separation(results)}
    assert set(found) == {(m, b) for m in ("ocsp", "laasp") for b in ("none", "magnitude", "random", "tp_groupnorm")}
    assert found["ocsp", "magnitude"]["delta"] == pytest.approx(8.0) and found["ocsp", "magnitude"]["p_value"] < 1e-4
    assert found["laasp", "random"]["delta"] == pytest.approx(0.0, abs=1e-9) and found["laasp", "random"]["p_value"] > 0.5
    assert found["ocsp", "none"]["delta"] == pytest.approx(-1.0)
    assert found["ocsp", "tp_groupnorm"]["p_value"] is None  # one seed: no verdict
    table = benchmark.separation_table(list(found.values()))
    assert "| m | 1 | 80% | ocsp | magnitude | +8.00 |" in table and "| yes |" in table and "| no |" in table
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    assert "| yes |" in benchmark.main(["--output_dir", str(tmp_path), "--report_only"])  # no training: m is no model
    assert "beyond seed noise" in (tmp_path / "results.md").read_text()


def test_round_to_is_an_axis_of_the_pruning_runs_only(benchmark, tmp_path):
    options = benchmark.BenchmarkArguments(output_dir=str(tmp_path), models=["m"], methods=["none", "ocsp"],
                                           targets=[0.5], seeds=[0])
    assert options.round_to == ["1", "auto"]
    def fake_run(key, _options):
        dense = key["method"] == "none"
        measured = _row(key["method"], 0, 0.9, 100 if dense else 50, 2.0 if key["round_to"] == "auto" else 8.0)
        return {name: value for name, value in measured.items() if name not in benchmark.KEY_FIELDS}

    rows = benchmark.run_grid(options, fake_run)
    assert [(r["method"], r["round_to"]) for r in rows] == [("none", "1"), ("ocsp", "1"), ("ocsp", "auto")]
    summary = {(e["method"], e["round_to"]): e for e in benchmark.summarize(rows)}
    assert summary["ocsp", "1"]["speedup_bs64"] == 1.0 and summary["ocsp", "auto"]["speedup_bs64"] == 4.0
    assert "| m | ocsp | auto | 50% | 1 |" in benchmark.markdown_table(list(summary.values()))
    assert {c["round_to"] for c in benchmark.separation(rows + [rows[1] | {"seed": 1}])} == {"1", "auto"}
