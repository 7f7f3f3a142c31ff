"""Input transforms built from a model's `ImageDataConfig`, and the Trainer collator.

Train (CIFAR-style, inputs <= 64 px): resize to the input size, RandomCrop(padding=4), flip.
Train (otherwise): RandomResizedCrop, flip. Eval: Resize(size / crop_pct), CenterCrop(size), or
the image processor saved with the model, so that ``pipeline`` preprocesses exactly as evaluation did.
Images are converted to the model's channel count first (grayscale, RGBA and palette images
become RGB), so MNIST digits feed ImageNet/CIFAR models unchanged.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch
from torchvision import transforms as T

from hf_prune.data.datasets import ImageClassificationData
from hf_prune.models import ImageDataConfig

if TYPE_CHECKING:
    from transformers.image_processing_utils import BaseImageProcessor

CIFAR_CROP_PADDING = 4


class _ConvertMode:
    """Convert a PIL image to a fixed mode (a class, not a lambda, so it pickles for workers)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: PIL.Image.Image) -> PIL.Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def build_transform(
        data_config: ImageDataConfig, *, train: bool, hflip: bool = True,
) -> Callable[[PIL.Image.Image], torch.Tensor]:
    """PIL image -> normalized float tensor of shape `data_config.input_size`.

    Args:
        data_config: The model's input size, normalization, interpolation and crop settings.
        train: Random augmentation (crop + flip) instead of the deterministic eval resize/crop.
        hflip: Random horizontal flips in training. Turn off for data whose meaning is not
            mirror-invariant, e.g. digits and text (a flipped 2 or 7 is not a digit).

    Returns:
        A torchvision transform.
    """
    channels, height, width = data_config.input_size
    size = (height, width)
    interpolation = T.InterpolationMode(data_config.interpolation)
    steps: list[Any] = [_ConvertMode("L" if channels == 1 else "RGB")]
    if train and data_config.cifar_style:
        steps += [
            T.Resize(size, interpolation=interpolation),
            T.RandomCrop(size, padding=CIFAR_CROP_PADDING),
        ]
    elif train:
        steps.append(T.RandomResizedCrop(size, interpolation=interpolation))
    else:
        scaled = tuple(int(side / data_config.crop_pct) for side in size)
        # An int resizes the shorter side and keeps the aspect ratio, as timm does for square inputs.
        steps += [
            T.Resize(scaled[0] if height == width else scaled, interpolation=interpolation),
            T.CenterCrop(size),
        ]
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(data_config.mean, data_config.std)]
    return T.Compose(steps)


class _ProcessorTransform:
    """An image processor applied to one image, after the RGB conversion ``pipeline`` applies first."""

    def __init__(self, processor: BaseImageProcessor, channels: int) -> None:
        self.processor = processor
        self.convert = _ConvertMode("L" if channels == 1 else "RGB")

    def __call__(self, image: PIL.Image.Image) -> torch.Tensor:
        return self.processor(self.convert(image), return_tensors="pt")["pixel_values"][0]


class _ExampleTransform:
    """Batch transform for `Dataset.with_transform`: images -> pixel_values, labels -> labels."""

    def __init__(self, transform: Callable[[PIL.Image.Image], torch.Tensor], image_column: str, label_column: str):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {
            "pixel_values": [self.transform(image) for image in batch[self.image_column]],
            "labels": [int(label) for label in batch[self.label_column]],
        }


def with_transforms(
        data: ImageClassificationData, data_config: ImageDataConfig, *, hflip: bool = True,
        image_processor: BaseImageProcessor | None = None,
) -> ImageClassificationData:
    """A copy of `data` whose rows are {"pixel_values": FloatTensor(C, H, W), "labels": int}.

    Train rows get the random train transform, validation rows the eval transform; both are
    applied on access (`with_transform`), so nothing is precomputed or cached. Only the image and
    label columns are decoded. With the Trainer, set ``remove_unused_columns=False``: otherwise it
    drops the image column before the transform sees it.

    Args:
        data: Splits and column names from `load_image_classification_data`.
        data_config: The model's data config.
        hflip: Random horizontal flips in training (see `build_transform`).
        image_processor: The eval preprocessing saved with the model (`hf_prune.hub.image_processor_for`),
            used for the validation rows instead of `build_transform`: transformers' processors resize
            with their own kernel, and evaluating through the very processor ``pipeline`` loads makes
            the saved model's predictions those of the trainer's evaluation.
    """
    columns = [data.image_column, data.label_column]
    train_transform = _ExampleTransform(build_transform(data_config, train=True, hflip=hflip), *columns)
    eval_steps = (build_transform(data_config, train=False) if image_processor is None
                  else _ProcessorTransform(image_processor, data_config.input_size[0]))
    eval_transform = _ExampleTransform(eval_steps, *columns)
    return dataclasses.replace(
        data,
        train=data.train.with_transform(train_transform, columns=columns),
        validation=data.validation.with_transform(eval_transform, columns=columns),
    )


def collate_image_batch(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack transformed rows into {"pixel_values": (B, C, H, W) float, "labels": (B,) long}.

    Raises:
        ValueError: A row is not a transformed one (raw images, other column names).
    """
    if not {"pixel_values", "labels"} <= set(examples[0]):
        raise ValueError(
            f"collate_image_batch needs rows with 'pixel_values' (an image tensor) and 'labels' (an int), got "
            f"{sorted(examples[0])}: pass the dataset through hf_prune.data.with_transforms(data, data_config) first "
            "(it turns the image and label columns into pixel_values and labels)."
        )
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }
