"""Data: image classification datasets (Hub, image folders, builtin offline sets) and transforms."""
from .datasets import BUILTIN_DATASETS, ImageClassificationData, load_image_classification_data
from .transforms import build_transform, collate_image_batch, with_transforms

__all__ = [
    "BUILTIN_DATASETS",
    "ImageClassificationData",
    "build_transform",
    "collate_image_batch",
    "load_image_classification_data",
    "with_transforms",
]
