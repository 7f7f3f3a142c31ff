"""The embedded default job, shortened: trains, prunes, saves, reloads and reports."""

from __future__ import annotations

import json

import pytest

import hf_prune

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


def test_help_lists_pruning_options_first_with_choices_and_the_defaults_that_apply(load_script):
    help_text = load_script(SCRIPT).make_parser().format_help()
    headings = [line[:-1] for line in help_text.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert headings[:2] == ["options", "Pruning"]
    assert headings[-3:] == ["Model", "Data", "Training (every transformers.TrainingArguments flag)"]
    assert {"Pruning method 'ocsp'", "Pruning method 'laasp'"} <= set(headings)
    pruning = help_text[help_text.index("\nPruning:"):help_text.index("\nModel:")]
    assert "--pruning_method {" + ",".join(hf_prune.list_methods()) + "}" in pruning
    assert "--target_flops_reduction" in pruning
    assert "--learning_rate" not in pruning and "--remove_unused_columns" not in pruning
    training = help_text[help_text.index("\nTraining ("):]
    for flag, default in [("learning_rate", "0.1"), ("per_device_train_batch_size", "128"), ("optim", "sgd"),
                          ("lr_scheduler_type", "cosine"), ("num_train_epochs", "4")]:
        option = training[training.index(f"  --{flag} "):]
        assert f"(default: {default})" in " ".join(option[:option.index("\n  --")].split())


def test_arguments_name_the_output_after_the_run_and_image_folders_are_not_the_demo_data(load_script, tmp_path):
    script = load_script(SCRIPT)
    model_args, data_args, training_args = script.parse_arguments(["--use_cpu", "--report_to", "none"])
    assert data_args.source == "builtin:mnist5k" and training_args.learning_rate == 0.1
    assert training_args.output_dir == "outputs/cifar_resnet20-mnist5k-magnitude" and training_args.eval_around_prune
    folder = str(tmp_path / "pets")
    _, data_args, training_args = script.parse_arguments(["--train_dir", folder, "--pruning_method", "ocsp", "--use_cpu"])
    assert data_args.dataset_name is None and data_args.source == folder
    assert training_args.output_dir == "outputs/cifar_resnet20-pets-ocsp"
    with pytest.raises(ValueError, match="not both"):
        script.parse_arguments(["--train_dir", folder, "--dataset_name", "builtin:digits"])
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'ocps' (choose from ...)"
        script.parse_arguments(["--pruning_method", "ocps"])
