"""A resumed run is the same run, and no token lands in a written or uploaded file."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest

from hf_prune.trainer.card import redact_secrets

TOKEN = "hf_abcdefghijklmnopqrstuvwxyz0123456789"


def _checkpointed(make_trainer, tmp_path, **overrides):
    trainer = make_trainer(tmp_path, pruning_method="magnitude", max_steps=4, save_strategy="steps", save_steps=4,
                           **overrides)
    trainer.train()
    return tmp_path / "checkpoint-4"


@pytest.mark.parametrize(
    "changed, named",
    [({"target_flops_reduction": 0.6}, "target_flops_reduction: 0.5 in the checkpoint, 0.6 now"),
     ({"prune_epoch": 0.5}, "prune_epoch: None in the checkpoint, 0.5 now"),
     ({"num_classes": 3}, "num_classes: 4 in the checkpoint, 3 now")],
)
def test_resuming_with_other_pruning_settings_or_model_is_refused_with_the_difference(make_trainer, tmp_path, changed, named):
    _checkpointed(make_trainer, tmp_path)
    overrides = {k: v for k, v in changed.items() if k != "num_classes"}
    model = None
    if "num_classes" in changed:
        import timm

        model = timm.create_model("cifar_resnet20", num_classes=changed["num_classes"])
    resumed = make_trainer(tmp_path, model=model, pruning_method="magnitude", max_steps=4, **overrides)
    with pytest.raises(ValueError, match=f"different run.*{named}.*resume_with_changed_pruning"):
        resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 0


def test_the_override_flag_resumes_anyway(make_trainer, tmp_path):
    _checkpointed(make_trainer, tmp_path)
    resumed = make_trainer(tmp_path, pruning_method="magnitude", max_steps=6, resume_with_changed_pruning=True)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6 and len(resumed.pruning_events) == 1  # the restored event


def test_a_checkpoint_without_or_with_a_truncated_state_file_is_refused(make_trainer, tmp_path):
    checkpoint = _checkpointed(make_trainer, tmp_path)
    state = checkpoint / "pruning_state.json"
    state.write_text(state.read_text()[:40])
    with pytest.raises(ValueError, match=r"pruning_state.json is truncated or malformed.*earlier checkpoint"):
        make_trainer(tmp_path, pruning_method="magnitude", max_steps=4).train(resume_from_checkpoint=True)
    state.unlink()
    with pytest.raises(ValueError, match="has no pruning_state.json.*prune events .* would be lost"):
        make_trainer(tmp_path, pruning_method="magnitude", max_steps=4).train(resume_from_checkpoint=True)


def test_token_values_are_redacted_from_a_command_line():
    argv = ["run.py", "--hub_token", TOKEN, "--push_to_hub_token=" + TOKEN, "--lr", "0.1", "--note", f"x{TOKEN}y",
            "--average_tokens_across_devices", "true"]
    assert redact_secrets(argv, [TOKEN]) == [
        "run.py", "--hub_token", "<redacted>", "--push_to_hub_token=<redacted>", "--lr", "0.1", "--note",
        "x<redacted>y", "--average_tokens_across_devices", "true",
    ]
    assert redact_secrets(["run.py", "--hub_token", "secret-value"]) == ["run.py", "--hub_token", "<redacted>"]


def test_no_uploaded_or_written_file_holds_the_token(make_trainer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(sys, "argv", ["prune.py", "--hub_token", TOKEN, "--output_dir", str(tmp_path / "run")])
    remote = tmp_path / "remote"
    remote.mkdir()

    def fake_upload_folder(self, *, folder_path, allow_patterns=None, **kwargs):
        for name in allow_patterns:
            if (Path(folder_path) / name).exists():
                shutil.copy(Path(folder_path) / name, remote / name)
        return "https://huggingface.co/someone/slim/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: huggingface_hub.RepoUrl(
        f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    trainer = make_trainer(tmp_path / "run", pruning_method="magnitude", max_steps=4, card_latency=False,
                           hub_model_id="someone/slim", hub_token=TOKEN)
    trainer.train()
    trainer.push_to_hub()

    uploaded = sorted(os.listdir(remote))
    assert "README.md" in uploaded and "config.json" in uploaded
    card = (remote / "README.md").read_text()
    assert "--hub_token '<redacted>'" in card or "--hub_token <redacted>" in card
    written = [p for p in [*remote.iterdir(), *(tmp_path / "run").rglob("*")] if p.is_file()]
    assert written and not [p.name for p in written if TOKEN.encode() in p.read_bytes()]


@pytest.mark.parametrize("method", ["magnitude", "ocsp"])
def test_a_run_resumed_after_its_prune_is_not_checked_against_the_target_again(make_trainer, tmp_path, method):
    # On the slim model another 80 % cut is unreachable: checking it again would refuse a valid resume.
    settings = dict(pruning_method=method, target_flops_reduction=0.8, layer_prune_limit=0.9, num_train_epochs=2,
                    save_strategy="epoch")
    make_trainer(tmp_path, **settings).train()
    resumed = make_trainer(tmp_path, **{**settings, "num_train_epochs": 3}, resume_with_changed_pruning=True)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.epoch == 3 and len(resumed.pruning_events) == 1 and resumed.pruning_events[0]["macs_reduction"] >= 0.79
