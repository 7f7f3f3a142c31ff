"""A fixed subset of the coverage sweep (benchmarks/coverage_sweep.py): prune to 50 % MACs, save, reload."""

from __future__ import annotations

import pytest

SWEEP = "benchmarks/coverage_sweep.py"

# Grouped convolutions and GroupNorms (by whole groups), windowed attention with per-head bias
# tables, attention of unknown kinds (XCiT's cross-covariance and class attention) kept whole, and
# heads whose q, k, v the forward splits apart (transformers' LeViT).
SUBSET = ["hf_regnet", "hf_bit", "hf_swin", "xcit_nano_12_p16_224", "hf_levit"]


@pytest.mark.parametrize("key", SUBSET)
def test_architecture_prunes_to_half_the_macs_and_reloads_equal(load_script, key):
    coverage_sweep = load_script(SWEEP)
    row = coverage_sweep.run_in_process(coverage_sweep.ARCHS[key])
    assert row["status"] in ("pruned", "refused; pruned with its fix"), row.get("error")
    assert coverage_sweep.TARGET <= row["reduction"] < coverage_sweep.TARGET + 0.02
    assert row["analytic_error"] < 0.01
    assert row["reload_max_abs_diff"] <= coverage_sweep.RELOAD_TOLERANCE


def test_table_counts_only_the_architectures_that_ran(load_script):
    coverage_sweep = load_script(SWEEP)
    rows = [
        {"library": "timm", "status": "pruned"},
        {"library": "timm", "status": "refused; pruned with its fix"},
        {"library": "timm", "status": "failed"},
        {"library": "timm", "status": "not run"},
    ]
    line = coverage_sweep.summary_line(rows, "timm")
    assert line.startswith("timm: 1/3 prune to 50% MACs and reload equal (33%), 1 more")
