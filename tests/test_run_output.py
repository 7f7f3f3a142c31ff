"""What a run tells its user: one plain line per prune, no per-loader pin_memory warning on CPU."""

from __future__ import annotations

import re
import warnings


def test_each_prune_prints_one_plain_line(make_trainer, tmp_path, capsys):
    trainer = make_trainer(tmp_path, pruning_method="magnitude", max_steps=4, prune_epoch=0.25)
    trainer.train()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[hf_prune] pruned")]
    (event,) = trainer.pruning_events
    assert len(lines) == 1
    match = re.fullmatch(
        r"\[hf_prune\] pruned at step (\d+) \(epoch ([\d.]+)\): MACs ([\d.]+)M -> ([\d.]+)M \(([\d.]+)% below dense\), "
        r"params [\d.]+M -> [\d.]+M, method magnitude: one-shot magnitude at step \d+",
        lines[0],
    )
    assert match and int(match[1]) == event["global_step"]
    assert float(match[4]) == round(event["macs_after"] / 1e6, 2)
    assert abs(float(match[5]) - 100 * event["macs_reduction"]) < 0.06


def test_cpu_runs_do_not_pin_memory(make_args, make_trainer, tmp_path):
    args = make_args(tmp_path)
    assert args.use_cpu and args.dataloader_pin_memory is False
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "pin_memory" in str(w.message)]
