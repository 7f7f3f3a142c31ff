"""Slim models through transformers' entry points: Auto classes, pipeline, evaluate's evaluator, saved preprocessing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import Future
from pathlib import Path

import evaluate
import huggingface_hub
import pytest
import timm
import torch
from huggingface_hub import ModelCard
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from transformers import AutoImageProcessor, AutoModelForImageClassification, ConvNextConfig, ViTConfig, pipeline

from hf_prune import AutoPrunedModel, ModelSource, PruningTrainer, StructureGraph, save_pretrained
from hf_prune.data import build_transform, collate_image_batch, load_image_classification_data, with_transforms
from hf_prune.hub import image_processor_for
from hf_prune.metrics import TOPK_ACCURACY_PATH, compute_topk_metrics
from hf_prune.models import ImageDataConfig


DATA_CONFIG = ImageDataConfig(input_size=(3, 32, 32), mean=(0.45, 0.4, 0.35), std=(0.25, 0.2, 0.3), crop_pct=0.875)
KINDS = ["timm_cnn", "timm_vit", "transformers_vit", "transformers_convnext"]
TOKEN = "hf_abcdefghijklmnopqrstuvwxyz0123456789"


def _pruned_model(kind: str) -> tuple[torch.nn.Module, str, ModelSource]:
    """A tiny 10-class model with a different number of units kept in every group (per-layer widths)."""
    torch.manual_seed(0)
    if kind == "timm_cnn":
        model, library = timm.create_model("cifar_resnet20", num_classes=10), "timm"
    elif kind == "timm_vit":
        model, library = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2), "timm"
    elif kind == "transformers_vit":
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, num_labels=10)
        model, library = AutoModelForImageClassification.from_config(config), "transformers"
    else:
        config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=10)
        model, library = AutoModelForImageClassification.from_config(config), "transformers"
    source = ModelSource.from_model(model)
    graph = StructureGraph(model.eval(), torch.randn(1, 3, 32, 32))
    graph.apply({g.name: list(range(max(1, g.num_units - 1 - i % 3))) for i, g in enumerate(graph.groups)})
    return model.eval(), library, source


@pytest.fixture(scope="module")
def digits():
    return load_image_classification_data("builtin:digits", seed=0, max_train_samples=16, max_eval_samples=24)


def _trainer(make_args, tmp_path, kind: str, digits, **overrides) -> PruningTrainer:
    model, library, _ = _pruned_model(kind)
    processor = image_processor_for(DATA_CONFIG, library)
    data = with_transforms(digits, DATA_CONFIG, hflip=False, image_processor=processor)
    return PruningTrainer(
        model=model, args=make_args(tmp_path, pruning_method="none", per_device_eval_batch_size=8,
                                    remove_unused_columns=False, card_latency=False, **overrides),
        train_dataset=data.train, eval_dataset=data.validation, data_collator=collate_image_batch,
        compute_metrics=compute_topk_metrics, processing_class=processor,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_pipeline_and_auto_class_reproduce_the_trainer(make_args, tmp_path, kind, digits):
    trainer = _trainer(make_args, tmp_path / "run", kind, digits)
    top1 = trainer.evaluate()["eval_top1"]
    expected = torch.as_tensor(trainer.predict(trainer.eval_dataset).predictions).argmax(-1).tolist()
    trainer.save_model()
    directory = tmp_path / "run"

    classifier = pipeline("image-classification", model=str(directory))
    images, labels = list(digits.validation[digits.image_column]), list(digits.validation[digits.label_column])
    predicted = [digits.labels.index(result[0]["label"]) for result in classifier(images, top_k=1)]
    assert predicted == expected  # class names saved, and the very preprocessing of the trainer's evaluation
    assert sum(p == y for p, y in zip(predicted, labels)) / len(labels) == pytest.approx(top1)

    auto = AutoModelForImageClassification.from_pretrained(directory)
    pixels = collate_image_batch([trainer.eval_dataset[i] for i in range(4)])["pixel_values"]
    with torch.no_grad():
        expected_logits = trainer.model(pixels)
        expected_logits = getattr(expected_logits, "logits", expected_logits)
        assert torch.equal(auto(pixels).logits, expected_logits)
        auto.save_pretrained(tmp_path / "again")  # a reloaded model saves a folder that loads again
        again = AutoModelForImageClassification.from_pretrained(tmp_path / "again")
        assert torch.equal(again(pixels).logits, expected_logits)
    assert auto.config.id2label == dict(enumerate(digits.labels)) == again.config.id2label


@pytest.mark.parametrize("kind", ["timm_cnn", "transformers_vit"])
def test_saved_preprocessing_is_the_training_eval_transform(tmp_path, kind, digits):
    model, library, source = _pruned_model(kind)
    processor = image_processor_for(DATA_CONFIG, library)
    save_pretrained(model, tmp_path, source=source, image_processor=processor, pruning={"input_size": [3, 32, 32]})
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    validation = with_transforms(digits, DATA_CONFIG, image_processor=processor).validation
    images = list(digits.validation[digits.image_column])[:4]
    found = reloaded([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    assert torch.equal(found, torch.stack([validation[i]["pixel_values"] for i in range(4)]))
    # The processor follows the data config: timm's is hf_prune's own transform; transformers' resizes
    # with another kernel (one grey level apart on these images).
    own = torch.stack([build_transform(DATA_CONFIG, train=False)(image) for image in images])
    tolerance = 0 if library == "timm" else 1.01 / 255 / min(DATA_CONFIG.std)
    assert found.shape == own.shape and (found - own).abs().max() <= tolerance
    config = json.loads((tmp_path / "config.json").read_text())
    if library == "timm":
        assert config["pretrained_cfg"]["mean"] == list(DATA_CONFIG.mean) and "hf_hub_id" not in config["pretrained_cfg"]
        assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and config["pretrained_cfg"]["crop_pct"] == 0.875
    else:
        assert sorted(os.listdir(tmp_path)) == [".hf_prune", "config.json", "model.safetensors", "preprocessor_config.json"]


def test_a_timm_model_trained_at_another_size_is_saved_with_its_own_preprocessing(tmp_path):
    model = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    assert model.pretrained_cfg["hf_hub_id"] and model.pretrained_cfg["input_size"] == (3, 224, 224)
    trained_at = ImageDataConfig(input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    save_pretrained(model, tmp_path, source=ModelSource.from_model(model),
                    image_processor=image_processor_for(trained_at, "timm"))
    saved = json.loads((tmp_path / "config.json").read_text())["pretrained_cfg"]
    assert (saved["input_size"], saved["mean"], saved["std"]) == ([3, 64, 64], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert not {"hf_hub_id", "url", "license"} & set(saved)  # the dense model's, not this one's
    assert AutoImageProcessor.from_pretrained(tmp_path).data_config["input_size"] == (3, 64, 64)


def test_a_reloaded_per_layer_vit_states_its_widths_and_saves_without_a_source(tmp_path):
    model, _, source = _pruned_model("transformers_vit")
    save_pretrained(model, tmp_path / "a", source=source)
    auto = AutoModelForImageClassification.from_pretrained(tmp_path / "a")
    heads, mlp = auto.config.layer_widths["num_attention_heads"], auto.config.layer_widths["intermediate_size"]
    assert auto.config.model_type == "hf_prune" and len(set(heads)) > 1 and 4 not in heads
    expected_mlp = [module.out_features for name, module in model.named_modules() if name.endswith("mlp.fc1")]
    assert mlp == expected_mlp and 128 not in mlp  # the dense ViT: 4 heads, MLP 128
    # the dense values live under source_config only
    assert not {"num_attention_heads", "intermediate_size"} & set(auto.config.to_dict())

    bare = AutoPrunedModel.from_pretrained(tmp_path / "a")
    save_pretrained(bare, tmp_path / "b")  # the source comes from the load
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(AutoPrunedModel.from_pretrained(tmp_path / "b")(inputs).logits, model(inputs).logits)


def test_a_model_without_a_known_source_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="pass source=ModelSource.from_model"):
        save_pretrained(timm.create_model("cifar_resnet20", num_classes=10), tmp_path)


def _stub_hub(monkeypatch, remote: Path) -> list[str]:
    """A Hub in ``remote``: ``upload_folder`` copies what huggingface_hub's own file filter selects; the pushed names."""
    pushed = []

    def upload_folder(self, *, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        files = {path.relative_to(folder_path).as_posix(): path
                 for path in sorted(Path(folder_path).glob("**/*")) if path.is_file()}
        ignored = [*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS]
        for name in filter_repo_objects(list(files), allow_patterns=allow_patterns, ignore_patterns=ignored):
            (remote / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[name], remote / name)
            pushed.append(name)
        if kwargs.get("run_as_future"):  # mid-training pushes: the Trainer waits on a future
            done = Future()
            done.set_result("https://huggingface.co/someone/slim/commit/0")
            return done
        return "https://huggingface.co/someone/slim/commit/0"

    remote.mkdir()
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: huggingface_hub.RepoUrl(
        f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return pushed


@pytest.mark.parametrize("kind", ["timm_cnn", "transformers_vit"])
def test_a_hub_push_carries_exactly_what_the_entry_points_need(make_args, tmp_path, kind, digits, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(sys, "argv", ["prune.py", "--hub_token", TOKEN])
    pushed = _stub_hub(monkeypatch, tmp_path / "remote")
    run = tmp_path / "run"
    trainer = _trainer(make_args, run, kind, digits, hub_model_id="someone/slim", hub_token=TOKEN)
    expected = torch.as_tensor(trainer.predict(trainer.eval_dataset).predictions).argmax(-1).tolist()
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "config.json").write_text("{}")
    trainer.push_to_hub(dataset="digits")

    preprocessing = ["preprocessor_config.json"] if kind.startswith("transformers") else []  # timm: in config.json
    assert sorted(pushed) == sorted(["README.md", "config.json", "model.safetensors", *preprocessing])
    assert (run / ".hf_prune").is_dir() and (run / "training_args.json").is_file()  # kept local
    assert not [name for name in pushed if TOKEN.encode() in (tmp_path / "remote" / name).read_bytes()]
    config = json.loads((tmp_path / "remote" / "config.json").read_text())
    if kind.startswith("timm"):
        assert {key: config["pretrained_cfg"][key] for key in ("input_size", "mean", "std", "crop_pct")} == {
            "input_size": [3, 32, 32], "mean": list(DATA_CONFIG.mean), "std": list(DATA_CONFIG.std), "crop_pct": 0.875}
    classifier = pipeline("image-classification", model=str(tmp_path / "remote"))
    images = list(digits.validation[digits.image_column])
    assert [digits.labels.index(result[0]["label"]) for result in classifier(images, top_k=1)] == expected

    card = ModelCard.load(tmp_path / "remote" / "README.md")
    snippet = card.text[card.text.index("## Use it"):].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    images[0].convert("RGB").save("image.jpg")
    namespace = {}
    exec(snippet.replace("someone/slim", str(tmp_path / "remote")), namespace)  # the card's code, on the pushed files
    assert namespace["classifier"]("image.jpg")[0]["label"] in digits.labels


def test_a_mid_training_push_loads_in_a_pipeline(make_args, tmp_path, digits, monkeypatch):
    pushed = _stub_hub(monkeypatch, tmp_path / "remote")
    trainer = _trainer(make_args, tmp_path / "run", "transformers_vit", digits, hub_model_id="someone/slim",
                       push_to_hub=True, hub_strategy="every_save", save_strategy="steps", save_steps=1, max_steps=1)
    trainer.train()

    assert sorted(set(pushed)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    classifier = pipeline("image-classification", model=str(tmp_path / "remote"))
    assert classifier(digits.validation[0][digits.image_column], top_k=1)[0]["label"] in digits.labels


def test_evaluate_evaluator_gives_the_trainer_top1(make_args, tmp_path, digits):
    trainer = _trainer(make_args, tmp_path, "timm_cnn", digits)
    top1 = trainer.evaluate()["eval_top1"]
    trainer.save_model()
    results = evaluate.evaluator("image-classification").compute(
        model_or_pipeline=str(tmp_path),  # a path: evaluate 0.4.6 fails on transformers 5 given a Pipeline object
        data=digits.validation,
        metric=evaluate.load(TOPK_ACCURACY_PATH),
        input_column=digits.image_column,
        label_column=digits.label_column,
        label_mapping={name: index for index, name in enumerate(digits.labels)},
    )
    assert results["top1"] == pytest.approx(top1)
