"""benchmarks/benchmark_conv_widths.py: one row per (resolution, width), MACs from the counter."""

from __future__ import annotations


def test_rows_count_the_convolutions_macs_for_every_width(load_script):
    script = load_script("benchmarks/benchmark_conv_widths.py")
    options = script.ConvWidthArguments(stages=["8:4,6"], batch_size=2, min_run_time=0.01)
    rows = [script.measure(8, width, options) for width in (4, 6)]
    assert [row["macs"] for row in rows] == [2 * w * w * 9 * 8 * 8 for w in (4, 6)]  # 3x3, padding 1: every pixel
    assert all(row["ms"] > 0 and row["mmac_per_ms"] == row["macs"] / 1e6 / row["ms"] for row in rows)
    table = script.main(["--stages", "8:4,6", "--batch_size", "2", "--min_run_time", "0.01"])
    assert [line.split(" | ")[1] for line in table.splitlines()[2:]] == ["4", "6"]
