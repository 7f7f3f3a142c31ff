"""CIFAR models registered in timm, and `load_model` over timm names, Hub ids and local dirs."""

from __future__ import annotations

import huggingface_hub
import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTConfig, ViTForImageClassification

from hf_prune.models import ImageDataConfig, LoadedModel, load_model

CIFAR_MODELS = ["cifar_resnet20", "cifar_resnet32", "cifar_resnet56", "cifar_resnet110", "cifar_vgg16"]


def _macs(model: nn.Module, size: int = 32) -> float:
    """Multiply-accumulates of one forward pass, counted by torch (FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2


def _count_convs(model: nn.Module) -> int:
    return sum(isinstance(module, nn.Conv2d) for module in model.modules())


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every Hub request fail at once instead of retrying against an unreachable network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def tiny_vit_dir(tmp_path) -> str:
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8,
    )
    config.save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_model_in_timm_registry(name: str) -> None:
    assert name in timm.list_models("cifar_*")
    model = timm.create_model(name, num_classes=10)
    assert model.num_classes == 10
    assert model.get_classifier() is model.fc
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["num_classes"] == 10 and cfg["classifier"] == "fc"
    assert cfg["mean"] == pytest.approx((0.4914, 0.4822, 0.4465))
    assert isinstance(model.get_submodule(cfg["first_conv"]), nn.Conv2d)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_vgg16"])
def test_reset_classifier(name: str) -> None:
    model = timm.create_model(name, num_classes=10)
    model.reset_classifier(100)
    assert model.num_classes == 100 and model.fc.out_features == 100
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


def test_cifar_resnet_macs_match_the_paper() -> None:
    # He et al. report ~125M FLOPs (multiply-adds) for ResNet-56 and ~41M for ResNet-20; the 1x1
    # projection shortcuts add 0.26M.
    assert 125e6 <= _macs(timm.create_model("cifar_resnet56")) <= 127.5e6
    assert 40.5e6 <= _macs(timm.create_model("cifar_resnet20")) <= 41.5e6


def test_conv_counts() -> None:
    # ResNet-56: stem + 2 convs x 27 blocks = 55, plus two 1x1 projection shortcuts.
    assert _count_convs(timm.create_model("cifar_resnet56")) == 57
    assert _count_convs(timm.create_model("cifar_resnet20")) == 21
    assert _count_convs(timm.create_model("cifar_vgg16")) == 13


def test_kaiming_init() -> None:
    conv = timm.create_model("cifar_resnet56").layer3[0].conv1
    fan_out = conv.out_channels * 3 * 3
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)


def test_load_timm_name() -> None:
    loaded = load_model("resnet18", 7)
    assert isinstance(loaded, LoadedModel)
    assert (loaded.source, loaded.name, loaded.model_args) == ("timm", "resnet18", {"num_classes": 7})
    assert loaded.model.num_classes == 7
    assert loaded.data_config.input_size == (3, 224, 224)
    assert not loaded.data_config.cifar_style
    rebuilt = timm.create_model(loaded.name, **loaded.model_args)
    assert rebuilt.state_dict().keys() == loaded.model.state_dict().keys()


def test_load_timm_prefix_and_image_size() -> None:
    loaded = load_model("timm/resnet18", 5, image_size=64)
    assert loaded.name == "resnet18"
    assert loaded.data_config.input_size == (3, 64, 64)
    assert loaded.data_config.cifar_style
    assert loaded.model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_load_cifar_model_data_config() -> None:
    loaded = load_model("cifar_resnet20", 10)
    assert loaded.data_config == ImageDataConfig(
        input_size=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        interpolation="bilinear",
        crop_pct=1.0,
        cifar_style=True,
    )


def test_load_fixed_size_timm_model_with_image_size() -> None:
    loaded = load_model("vit_tiny_patch16_224", 3, image_size=32)
    assert loaded.model_args == {"num_classes": 3, "img_size": 32}
    assert loaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_load_local_transformers_dir(tiny_vit_dir: str) -> None:
    loaded = load_model(tiny_vit_dir, 3, id2label={0: "cat", 1: "dog", 2: "eel"})
    assert (loaded.source, loaded.name, loaded.model_args) == ("transformers", tiny_vit_dir, {})
    assert loaded.model.config.label2id == {"cat": 0, "dog": 1, "eel": 2}
    assert loaded.model(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 3)
    # No preprocessor_config.json: ImageNet statistics.
    assert loaded.data_config.input_size == (3, 32, 32)
    assert loaded.data_config.mean == pytest.approx((0.485, 0.456, 0.406))


def test_load_local_transformers_weights_with_new_head(tiny_vit_dir: str) -> None:
    source = ViTForImageClassification(ViTConfig.from_pretrained(tiny_vit_dir, num_labels=4))
    source.save_pretrained(tiny_vit_dir)
    loaded = load_model(tiny_vit_dir, 2, pretrained=True)
    assert loaded.model.classifier.out_features == 2
    torch.testing.assert_close(
        loaded.model.state_dict()["vit.embeddings.patch_embeddings.projection.weight"],
        source.state_dict()["vit.embeddings.patch_embeddings.projection.weight"],
    )


def test_local_dir_processor_statistics(tiny_vit_dir: str) -> None:
    from transformers import ViTImageProcessor

    ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(tiny_vit_dir)
    config = load_model(tiny_vit_dir, 2).data_config
    assert config.mean == (0.5, 0.5, 0.5) and config.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("name", ["resnet18_not_a_model", "timm/resnt18"])
def test_unknown_model_names_it_and_suggests(name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        load_model(name, 10)
    assert "resnet18" in str(info.value).split("Did you mean:")[1]


def test_directory_without_config(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        load_model(str(tmp_path), 10)


def test_hub_id_offline_explains_pretrained(offline_hub: None) -> None:
    with pytest.raises(OSError, match="pretrained") as info:
        load_model("google/vit-base-patch16-224", 10, pretrained=True)
    assert "google/vit-base-patch16-224" in str(info.value)
    assert "pretrained=False" in str(info.value)


def test_timm_pretrained_offline_explains_pretrained(offline_hub: None) -> None:
    with pytest.raises(OSError, match="pretrained weights of model 'resnet18'"):
        load_model("resnet18", 10, pretrained=True)


def test_cifar_model_has_no_pretrained_weights() -> None:
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        load_model("cifar_resnet56", 10, pretrained=True)


def test_features_only() -> None:
    model = timm.create_model("cifar_resnet20", features_only=True)
    shapes = [tuple(feature.shape) for feature in model(torch.randn(1, 3, 32, 32))]
    assert shapes == [(1, 16, 32, 32), (1, 16, 32, 32), (1, 32, 16, 16), (1, 64, 8, 8)]


def test_load_timm_saved_dir(tmp_path) -> None:
    source = timm.create_model("cifar_resnet20", num_classes=4)
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    loaded = load_model(str(tmp_path), 4, pretrained=True)
    assert (loaded.source, loaded.name) == ("timm", "cifar_resnet20")
    torch.testing.assert_close(loaded.model.state_dict(), source.state_dict())
    assert load_model(str(tmp_path), 3, pretrained=True).model.fc.out_features == 3
