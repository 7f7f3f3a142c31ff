"""Tiny, fast training fixtures shared by the trainer tests."""

from __future__ import annotations

import timm
import torch
from torch.utils.data import Dataset

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import PruningArguments, PruningTrainer
from hf_prune.metrics import compute_topk_metrics


class Blobs(Dataset):
    """Four linearly separable classes of 32x32 images (class = which quadrant is bright)."""

    def __init__(self, n: int = 256, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.images = torch.randn(n, 3, 32, 32, generator=g) * 0.3
        for i, label in enumerate(self.labels.tolist()):
            r, c = divmod(label, 2)
            self.images[i, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += 3.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}


def make_args(tmp_path, **overrides) -> PruningArguments:
    settings = dict(
        output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=32, learning_rate=0.05,
        optim="sgd", optim_args="momentum=0.9", report_to=[], save_strategy="no", use_cpu=True,
        logging_steps=1, seed=0, target_flops_reduction=0.5, disable_tqdm=True,
    )
    settings.update(overrides)
    return PruningArguments(**settings)


def make_trainer(tmp_path, model=None, **overrides) -> PruningTrainer:
    torch.manual_seed(0)
    model = model or timm.create_model("cifar_resnet20", num_classes=4)
    return PruningTrainer(
        model=model, args=make_args(tmp_path, **overrides), train_dataset=Blobs(), eval_dataset=Blobs(64, 1),
        compute_metrics=compute_topk_metrics,
    )
