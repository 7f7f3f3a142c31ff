"""The embedded default job, shortened: trains, prunes, saves, reloads and reports."""

from __future__ import annotations

import json

import pytest

SCRIPT = "scripts/prune_image_classification.py"


@pytest.mark.parametrize("method, epochs, samples", [("magnitude", 3, 2048), ("ocsp", 4, 1536)])
def test_default_job_prunes_saves_and_reloads(load_script, tmp_path, method, epochs, samples):
    report = load_script(SCRIPT).main([
        "--output_dir", str(tmp_path), "--num_train_epochs", str(epochs), "--max_train_samples", str(samples),
        "--max_eval_samples", "300", "--use_cpu", "--disable_tqdm", "true", "--pruning_method", method,
    ])
    assert 0.5 <= report["macs_reduction"] < 0.51
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "cifar_resnet20" and len(config["hf_prune"]["pruning_events"]) == 1
    assert config["hf_prune"]["macs"] == report["pruned"]["macs"]
    assert report["pruned"]["macs"] < report["dense"]["macs"] and report["pruned"]["params"] < report["dense"]["params"]
    assert report["reload_max_abs_diff"] <= 1e-5
    assert report["pruned"]["top1"] > 0.5  # 10 classes: chance is 0.1
    saved = json.loads((tmp_path / "pruning_report.json").read_text())
    assert saved["pruned"]["macs"] == report["pruned"]["macs"]
    card = (tmp_path / "README.md").read_text()
    assert f"- {method}" in card and "pruned_widths.png" in card and (tmp_path / "pruned_widths.png").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))


def test_unknown_model_is_refused_before_training(load_script, tmp_path):
    with pytest.raises(ValueError, match="cifar_resnet2O"):
        load_script(SCRIPT).main(["--output_dir", str(tmp_path), "--model_name_or_path", "cifar_resnet2O"])
