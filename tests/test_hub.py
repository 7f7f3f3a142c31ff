"""Slim models on disk and on the Hub: save, from_pretrained, model card, push, resume across prunes."""

from __future__ import annotations

import json
from concurrent.futures import Future
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, ViTConfig

import hf_prune.hub.pretrained as pretrained_module
from hf_prune import AutoPrunedModel, ModelSource, StructureGraph, save_pretrained
from hf_prune.hub import PrunedModelError, image_processor_for
from hf_prune.models import ImageDataConfig


INPUTS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
TESTS = Path(__file__).parent


def _logits(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.logits


def _tiny_vit(heads: int = 4) -> torch.nn.Module:
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=heads,
                       intermediate_size=128, num_labels=4)
    return AutoModelForImageClassification.from_config(config)


def _build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "cifar_resnet20":
        return timm.create_model("cifar_resnet20", num_classes=10)
    if kind == "timm_vit":
        return timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2)
    return _tiny_vit()


def _prune_per_layer(model: torch.nn.Module) -> torch.nn.Module:
    """Keep a different number of units in every group (per-layer widths, not expressible in a config)."""
    graph = StructureGraph(model.eval(), INPUTS[:1])
    keep = {g.name: list(range(max(1, g.num_units - 1 - i % 3))) for i, g in enumerate(graph.groups)}
    graph.apply(keep)
    return model.eval()


@pytest.mark.parametrize("kind", ["cifar_resnet20", "timm_vit", "transformers_vit"])
def test_saved_slim_model_reloads_exactly_from_safetensors(tmp_path, kind, monkeypatch):
    model = _build(kind)
    source = ModelSource.from_model(model)
    _prune_per_layer(model)
    save_pretrained(model, tmp_path, source=source)

    built_on = []
    original_build = ModelSource.build
    monkeypatch.setattr(ModelSource, "build", lambda self, device="meta": built_on.append(str(device)) or original_build(self, device))
    reloaded = AutoPrunedModel.from_pretrained(tmp_path)

    assert built_on == ["meta"]  # the dense architecture is never materialized
    assert sorted(os.listdir(tmp_path)) == [".hf_prune", "config.json", "model.safetensors"]
    assert len(os.listdir(tmp_path / ".hf_prune")) == 2  # the commit link and the one version it names
    expected, found = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == found.keys() and all(torch.equal(expected[k], found[k]) for k in expected)
    with torch.no_grad():
        assert torch.equal(_logits(reloaded(INPUTS)), _logits(model(INPUTS)))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hf_prune"]["library"] == source.library and config["hf_prune"]["shape_spec"]["modules"]


def test_uniform_transformers_widths_load_with_vanilla_transformers(tmp_path, uniform_vit):
    model, source = uniform_vit
    save_pretrained(model, tmp_path, source=source)

    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["num_attention_heads"], config["head_dim"], config["intermediate_size"]) == (3, 16, 96)
    assert not any(config["hf_prune"]["shape_spec"][k] for k in ("modules", "attention", "parameters"))
    vanilla = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(vanilla(INPUTS).logits, model(INPUTS).logits)
        assert torch.equal(AutoPrunedModel.from_pretrained(tmp_path)(INPUTS).logits, model(INPUTS).logits)


_WITHOUT_HF_PRUNE = """
import sys
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, pipeline
directory, inputs, outputs = sys.argv[1:]
model = AutoModelForImageClassification.from_pretrained(directory).eval()
with torch.no_grad():
    logits = model(load_file(inputs)["pixels"]).logits
label = pipeline("image-classification", model=directory)(load_file(inputs)["image"].numpy())[0]["label"]
save_file({"logits": logits.contiguous()}, outputs, metadata={"label": label})
assert "hf_prune" not in sys.modules
"""


def test_uniform_widths_load_in_a_process_that_never_imports_hf_prune(tmp_path, uniform_vit):
    model, source = uniform_vit
    config = ImageDataConfig(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    save_pretrained(model, tmp_path / "model", source=source, labels=["a", "b", "c", "d"],
                    image_processor=image_processor_for(config, "transformers"))
    image = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_file({"pixels": INPUTS, "image": image}, tmp_path / "inputs.safetensors")
    subprocess.run([sys.executable, "-c", _WITHOUT_HF_PRUNE, str(tmp_path / "model"), str(tmp_path / "inputs.safetensors"),
                    str(tmp_path / "outputs.safetensors")], check=True, cwd=tmp_path, timeout=300)
    with safe_open(tmp_path / "outputs.safetensors", "pt") as outputs, torch.no_grad():
        assert torch.equal(outputs.get_tensor("logits"), model(INPUTS).logits)
        pixels = image_processor_for(config, "transformers")(image.numpy(), return_tensors="pt")["pixel_values"]
        assert outputs.metadata()["label"] == "abcd"[model(pixels).logits.argmax().item()]


def _trained(make_trainer, tmp_path, **overrides):
    trainer = make_trainer(tmp_path, pruning_method="magnitude", max_steps=6, eval_strategy="steps", eval_steps=3,
                           card_latency=False, **overrides)
    trainer.train()
    return trainer


@pytest.mark.slow
def test_trainer_save_and_push_to_hub_upload_exactly_what_from_pretrained_needs(make_trainer, tmp_path, monkeypatch):
    trainer = _trained(make_trainer, tmp_path / "run", hub_model_id="someone/slim-resnet20")
    remote = tmp_path / "remote"
    uploads = []

    def fake_upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):
        uploads.append((repo_id, sorted(allow_patterns)))
        for name in allow_patterns:
            if (Path(folder_path) / name).exists():
                shutil.copy(Path(folder_path) / name, remote / name)
        return "https://huggingface.co/someone/slim-resnet20/commit/0"

    remote.mkdir()
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: huggingface_hub.RepoUrl(
        f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    monkeypatch.setattr(pretrained_module, "snapshot_download", lambda repo_id, **kw: str(remote))
    trainer.push_to_hub(license="apache-2.0", dataset_tags="ylecun/mnist", dataset="MNIST")

    assert uploads == [("someone/slim-resnet20", ["README.md", "config.json", "model.safetensors",
                                                   "pruned_widths.png", "training_curves.png"])]
    assert sorted(os.listdir(remote)) == ["README.md", "config.json", "model.safetensors", "pruned_widths.png",
                                          "training_curves.png"]
    reloaded = AutoPrunedModel.from_pretrained("someone/slim-resnet20")
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(INPUTS), trainer.model(INPUTS))

    card = ModelCard.load(remote / "README.md")
    assert card.data.library_name == "hf_prune" and card.data.license == "apache-2.0"
    assert {"pruned", "structured-pruning", "hf_prune", "magnitude"} <= set(card.data.tags)
    assert card.data.datasets == ["ylecun/mnist"]
    assert card.data.eval_results[0].metric_value == round(100 * trainer.state.log_history[-2]["eval_top1"], 2)
    assert "(./pruned_widths.png)" in card.text and "(./training_curves.png)" in card.text
    assert "from_pretrained(\"someone/slim-resnet20\")" in card.text


def test_pushes_during_training_upload_the_slim_model_and_no_pickle(make_trainer, tmp_path, monkeypatch):
    uploads = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: huggingface_hub.RepoUrl(
        f"https://huggingface.co/{repo_id}"))

    def fake_upload_folder(self, *, folder_path, allow_patterns=None, **kwargs):
        uploads.append((Path(folder_path).name, sorted(allow_patterns or ["<everything>"])))
        done = Future()
        done.set_result("https://huggingface.co/someone/slim/commit/0")
        return done

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    trainer = make_trainer(tmp_path, pruning_method="magnitude", max_steps=4, save_strategy="steps", save_steps=2,
                           push_to_hub=True, hub_model_id="someone/slim", hub_always_push=True, card_latency=False)
    trainer.train()
    assert uploads == [("checkpoint-2", ["config.json", "model.safetensors"]),
                       ("checkpoint-4", ["config.json", "model.safetensors"])]
    assert not list(tmp_path.rglob("*.bin"))


@pytest.mark.slow
def test_card_measures_latency_and_shows_the_method_plot_and_citation(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="ocsp", max_steps=8, ocsp_monitor_interval=0.25,
                           ocsp_prune_deadline=0.75, num_train_epochs=1)
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "README.md").read_text()
    rows = [line for line in card.splitlines() if line.startswith(("| dense", "| pruned"))]
    latencies = [float(cell) for row in rows for cell in row.strip("|").split("|")[5:7]]
    assert len(latencies) == 4 and all(ms > 0 for ms in latencies)
    assert "(./ocsp_stability.png)" in card and (tmp_path / "ocsp_stability.png").exists()
    assert "eprint        = {2501.13439}" in card


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cifar_resnet20", "transformers_vit"])
def test_resume_after_a_prune_rebuilds_the_slim_model_and_restores_every_weight(make_trainer, tmp_path, kind):
    settings = dict(pruning_method="magnitude", max_steps=6, prune_epoch=0.05, target_flops_reduction=0.3)
    full = make_trainer(tmp_path / "full", model=None if kind == "cifar_resnet20" else _tiny_vit(),
                        save_strategy="steps", save_steps=3, **settings)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert full.pruning_events[0]["global_step"] < 3  # the checkpoint holds the slim architecture

    resumed = make_trainer(tmp_path / "resumed", model=None if kind == "cifar_resnet20" else _tiny_vit(), **settings)
    resumed._load_from_checkpoint(str(checkpoint))
    saved = _tensors(checkpoint)
    restored = resumed.model.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)

    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6 and len(resumed.pruning_events) == 1
    final_full, final_resumed = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(final_full[k].float(), final_resumed[k].float(), atol=1e-5) for k in final_full)


@pytest.mark.slow
def test_load_best_model_at_end_follows_the_checkpoint_architecture(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="magnitude", max_steps=6, prune_epoch=0.3, eval_strategy="steps",
                           eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
                           metric_for_best_model="eval_loss", greater_is_better=True)  # the worst loss: likely pre-prune
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name == "checkpoint-1" and trainer.pruning_events[0]["global_step"] == 2
    assert trainer.model.conv1.out_channels == 16  # back to the dense architecture of the best checkpoint
    saved, loaded = _tensors(best), trainer.model.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)


@pytest.mark.slow
def test_sigkill_right_after_a_prune_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}

    def run(mode: str, directory: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(TESTS / "_crash_worker.py"), mode, str(directory)],
                              env=env, capture_output=True, text=True, timeout=300)

    killed = run("kill", tmp_path / "crashed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = sorted(p.name for p in (tmp_path / "crashed").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3"] and not (tmp_path / "crashed" / "final").exists()

    resumed = run("resume", tmp_path / "crashed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    uninterrupted = run("full", tmp_path / "full")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    summary = json.loads((tmp_path / "crashed" / "final" / "summary.json").read_text())
    assert summary["global_step"] == 8 and summary["prune_steps"] == [2]
    a, b = _tensors(tmp_path / "crashed" / "final"), _tensors(tmp_path / "full" / "final")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert a["conv1.weight"].shape[0] < 16  # the architecture stayed slim


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def saved_dir(tmp_path) -> Path:
    model = _prune_per_layer(_build("cifar_resnet20"))
    save_pretrained(model, tmp_path / "model", source=ModelSource("timm", "cifar_resnet20", {"num_classes": 10}))
    return tmp_path / "model"


def _edit_spec(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config["hf_prune"]["shape_spec"]["modules"])
    (directory / "config.json").write_text(json.dumps(config))


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(PrunedModelError, match="has no config.json"):
        AutoPrunedModel.from_pretrained(tmp_path)


def test_a_config_without_the_spec_is_refused(saved_dir):
    config = json.loads((saved_dir / "config.json").read_text())
    del config["hf_prune"]
    (saved_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(PrunedModelError, match="no 'hf_prune' section"):
        AutoPrunedModel.from_pretrained(saved_dir)


def test_a_truncated_safetensors_file_is_refused(saved_dir):
    weights = saved_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(PrunedModelError, match="corrupted or truncated"):
        AutoPrunedModel.from_pretrained(saved_dir)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_weights_are_never_loaded(saved_dir, monkeypatch):
    monkeypatch.chdir(saved_dir)
    (saved_dir / "model.safetensors").unlink()
    (saved_dir / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(PrunedModelError, match="pytorch_model.bin.*never loaded"):
        AutoPrunedModel.from_pretrained(saved_dir)
    assert not (saved_dir / "pwned").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update({"layer9.conv": m.pop("conv1")}), "module 'layer9.conv'"),
        (lambda m: m.update({"../../etc/passwd": m.pop("conv1")}), "module '../../etc/passwd'"),
        (lambda m: m.update({"__class__": m.pop("conv1")}), "module '__class__'"),
        (lambda m: m["conv1"].update(out_channels=0), r"conv1.out_channels the sizes \[0\]"),
        (lambda m: m["conv1"].update(out_channels=-3), r"conv1.out_channels the sizes \[-3\]"),
        (lambda m: m["conv1"].update(out_channels=17), r"conv1.out_channels the sizes \[17\]"),
        (lambda m: m["conv1"]["tensors"].update(weight=[4, 3, 3, 99]), r"conv1.weight the sizes"),
    ],
)
def test_a_spec_that_does_not_fit_the_architecture_is_refused(saved_dir, edit, message):
    _edit_spec(saved_dir, edit)
    with pytest.raises(PrunedModelError, match=message):
        AutoPrunedModel.from_pretrained(saved_dir)


def test_a_config_cannot_make_timm_load_a_checkpoint(saved_dir):
    config = json.loads((saved_dir / "config.json").read_text())
    config["model_args"]["checkpoint_path"] = str(saved_dir / "evil.pth")
    (saved_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(PrunedModelError, match=r"\['checkpoint_path'\] would make timm load files"):
        AutoPrunedModel.from_pretrained(saved_dir)


def test_weights_that_do_not_match_the_spec_are_refused(saved_dir):
    _edit_spec(saved_dir, lambda m: m.pop("conv1"))  # spec says dense conv1, weights are slim
    with pytest.raises(PrunedModelError, match="does not match its config"):
        AutoPrunedModel.from_pretrained(saved_dir)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_failed_save_leaves_the_previous_model_intact(saved_dir, monkeypatch):
    before = _files(saved_dir)

    def failing_save_file(tensors, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pretrained_module, "save_file", failing_save_file)
    model = _prune_per_layer(_build("cifar_resnet20"))
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, saved_dir, source=ModelSource("timm", "cifar_resnet20", {"num_classes": 10}))
    assert _files(saved_dir) == before


def test_a_model_built_with_other_arguments_than_its_source_is_refused(tmp_path):
    model = timm.create_model("cifar_resnet20", num_classes=10)
    with pytest.raises(PrunedModelError, match=r"cannot be rebuilt from timm 'cifar_resnet20'.*fc.out_features the sizes \[10\]"):
        save_pretrained(model, tmp_path, source=ModelSource("timm", "cifar_resnet20", {"num_classes": 4}))
    assert not list(tmp_path.iterdir())
