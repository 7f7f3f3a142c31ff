"""The embedded default job, shortened: trains, prunes, saves, reloads and reports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hf_prune

SCRIPT = "scripts/prune_image_classification.py"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method, epochs, samples", [("magnitude", 3, 2048), ("ocsp", 4, 1536)])
def test_default_job_prunes_saves_and_reloads(load_script, tmp_path, method, epochs, samples):
    dense_run = tmp_path / "dense" / "eval_results.json"
    dense_run.parent.mkdir()
    dense_run.write_text(json.dumps({"eval_top1": 0.987}))
    run = tmp_path / "run"
    report = load_script(SCRIPT).main([
        "--output_dir", str(run), "--num_train_epochs", str(epochs), "--max_train_samples", str(samples),
        "--max_eval_samples", "300", "--use_cpu", "--disable_tqdm", "true", "--pruning_method", method,
        "--dense_reference", str(dense_run),
    ])
    assert 0.5 <= report["macs_reduction"] < 0.51
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "cifar_resnet20" and len(config["hf_prune"]["pruning_events"]) == 1
    assert config["hf_prune"]["macs"] == report["pruned"]["macs"]
    assert report["pruned"]["macs"] < report["dense"]["macs"] and report["pruned"]["params"] < report["dense"]["params"]
    assert report["reload_max_abs_diff"] <= 1e-5
    assert report["pruned"]["top1"] > 0.5  # 10 classes: chance is 0.1
    saved = json.loads((run / "pruning_report.json").read_text())
    assert saved["pruned"]["macs"] == report["pruned"]["macs"]
    card = (run / "README.md").read_text()
    assert f"- {method}" in card and "pruned_widths.png" in card and (run / "pruned_widths.png").exists()
    assert "| dense reference (trained without pruning) | 98.70 |" in card
    assert json.loads((run / "eval_results.json").read_text())["eval_top1"] == report["pruned"]["top1"]
    assert not list(run.glob("*.bin")) and not list(run.glob("*.pt"))


def test_unknown_model_is_refused_before_training(load_script, tmp_path):
    with pytest.raises(ValueError, match="cifar_resnet2O"):
        load_script(SCRIPT).main(["--output_dir", str(tmp_path), "--model_name_or_path", "cifar_resnet2O"])


def test_help_lists_pruning_options_first_with_choices_and_the_defaults_that_apply(load_script):
    help_text = load_script(SCRIPT).make_parser().format_help()
    headings = [line[:-1] for line in help_text.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert headings[:2] == ["options", "Pruning"]
    assert headings[-4:] == ["Model", "Data", "Resuming", "Training (every transformers.TrainingArguments flag)"]
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
    model_args, data_args, _, training_args = script.parse_arguments(["--use_cpu", "--report_to", "none"])
    assert data_args.source == "builtin:mnist5k" and training_args.learning_rate == 0.1
    assert training_args.output_dir == "outputs/cifar_resnet20-mnist5k-magnitude" and training_args.eval_around_prune
    folder = str(tmp_path / "pets")
    _, data_args, _, training_args = script.parse_arguments(["--train_dir", folder, "--pruning_method", "ocsp", "--use_cpu"])
    assert data_args.dataset_name is None and data_args.source == folder
    assert training_args.output_dir == "outputs/cifar_resnet20-pets-ocsp"
    with pytest.raises(ValueError, match="not both"):
        script.parse_arguments(["--train_dir", folder, "--dataset_name", "builtin:digits"])
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'ocps' (choose from ...)"
        script.parse_arguments(["--pruning_method", "ocps"])


@pytest.mark.slow
def test_a_killed_script_run_resumes_from_its_last_checkpoint_like_an_uninterrupted_one(tmp_path):
    """SIGKILL mid-search (OCSP between checks), then the same command again: it resumes the search.

    Weights are not compared bit for bit: accelerate's dataloader fetches one batch ahead, so the
    random augmentations after a resume are drawn from another RNG position (the Trainer's own
    limitation; tests/test_hub.py compares bit for bit on data without augmentation).
    """
    script = ROOT / "scripts" / "prune_image_classification.py"
    common = ["--dataset_name", "builtin:digits", "--max_train_samples", "256", "--max_eval_samples", "64",
              "--num_train_epochs", "4", "--per_device_train_batch_size", "32", "--pruning_method", "ocsp",
              "--save_strategy", "steps", "--save_steps", "4", "--eval_strategy", "no", "--eval_around_prune", "false",
              "--full_determinism", "--use_cpu", "--disable_tqdm", "true", "--no_card_latency", "--report_to", "none"]

    def run(program: Path, output_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(program), "--output_dir", str(output_dir), *common],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)

    killed = run(ROOT / "tests" / "_script_kill_worker.py", tmp_path / "crashed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (checkpoint,) = (tmp_path / "crashed").glob("checkpoint-*")
    killed_state = json.loads((checkpoint / "pruning_state.json").read_text())
    assert killed_state["method_state"]["checks"] > 0 and not killed_state["pruning_events"]  # mid-search
    resumed = run(script, tmp_path / "crashed")  # the plain command, relaunched
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"[hf_prune] resuming from {checkpoint}" in resumed.stdout
    uninterrupted = run(script, tmp_path / "full")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    states = [json.loads((tmp_path / run / "pruning_state.json").read_text()) for run in ("crashed", "full")]
    assert [e["global_step"] for e in states[0]["pruning_events"]] == [e["global_step"] for e in states[1]["pruning_events"]]
    assert states[0]["method_state"]["checks"] == states[1]["method_state"]["checks"]  # no check lost or repeated


def test_the_checkpoint_to_resume_follows_transformers_examples(load_script, tmp_path):
    script = load_script(SCRIPT)
    for step in (4, 12, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
    _, _, resume, args = script.parse_arguments(["--output_dir", str(tmp_path), "--use_cpu"])
    assert script.checkpoint_to_resume(args, resume) == str(tmp_path / "checkpoint-12")
    _, _, resume, args = script.parse_arguments(["--output_dir", str(tmp_path), "--use_cpu", "--overwrite_output_dir"])
    assert script.checkpoint_to_resume(args, resume) is None
    _, _, resume, args = script.parse_arguments(
        ["--output_dir", str(tmp_path), "--use_cpu", "--resume_from_checkpoint", str(tmp_path / "checkpoint-4")])
    assert script.checkpoint_to_resume(args, resume) == str(tmp_path / "checkpoint-4")
    _, _, resume, args = script.parse_arguments(["--output_dir", str(tmp_path / "new"), "--use_cpu"])
    assert script.checkpoint_to_resume(args, resume) is None
