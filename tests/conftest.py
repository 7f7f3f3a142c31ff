"""Shared test fixtures: a tiny separable dataset, a toy trainer factory, and scripts loaded by path.

``scripts/`` and ``benchmarks/`` hold programs, not packages: a test that calls into one takes the
``load_script`` fixture, which imports the file by path once per session.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import timm
import torch
from torch.utils.data import Dataset
from transformers import AutoModelForImageClassification, ViTConfig

from hf_prune import ModelSource, PruningArguments, PruningTrainer, StructureGraph
from hf_prune.metrics import compute_topk_metrics
from hf_prune.structure import apply_shape_spec, export_shape_spec

ROOT = Path(__file__).resolve().parents[1]


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


def toy_args(output_dir, **overrides) -> PruningArguments:
    """Short CPU training arguments (2 epochs of batch 32, SGD, half the MACs), updated by ``overrides``."""
    settings = dict(
        output_dir=str(output_dir), num_train_epochs=2, per_device_train_batch_size=32, learning_rate=0.05,
        optim="sgd", optim_args="momentum=0.9", report_to=[], save_strategy="no", use_cpu=True,
        logging_steps=1, seed=0, target_flops_reduction=0.5, disable_tqdm=True,
    )
    settings.update(overrides)
    return PruningArguments(**settings)


def toy_trainer(output_dir, model=None, **overrides) -> PruningTrainer:
    """A seeded ``PruningTrainer`` of ``cifar_resnet20`` (or ``model``) on :class:`Blobs`."""
    torch.manual_seed(0)
    model = model or timm.create_model("cifar_resnet20", num_classes=4)
    return PruningTrainer(
        model=model, args=toy_args(output_dir, **overrides), train_dataset=Blobs(), eval_dataset=Blobs(64, 1),
        compute_metrics=compute_topk_metrics,
    )


@functools.cache
def _load_by_path(relative_path: str) -> ModuleType:
    path = ROOT / relative_path
    if str(path.parent) not in sys.path:  # as when run: a program imports its neighbours by name
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def blobs() -> type[Blobs]:
    """The :class:`Blobs` dataset class: ``blobs(n, seed)``."""
    return Blobs


@pytest.fixture
def make_args() -> Callable[..., PruningArguments]:
    """:func:`toy_args`: ``make_args(output_dir, **overrides)``."""
    return toy_args


@pytest.fixture
def make_trainer() -> Callable[..., PruningTrainer]:
    """:func:`toy_trainer`: ``make_trainer(output_dir, model=None, **overrides)``."""
    return toy_trainer


@pytest.fixture
def uniform_vit() -> tuple[torch.nn.Module, ModelSource]:
    """A tiny 4-class transformers ViT pruned to 3 heads and MLP width 96 in both layers, and its dense source."""
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, num_labels=4)
    model = AutoModelForImageClassification.from_config(config).eval()
    source = ModelSource.from_model(model)
    graph = StructureGraph(model, torch.randn(1, 3, 32, 32))
    graph.apply({g.name: list(range(3 if g.kind == "head" else 96)) for g in graph.groups})
    return model, source


def rebuilt_from_shape_spec(model: torch.nn.Module, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """What a reload does: ``build()`` reshaped by ``model``'s shape spec (through JSON), its weights loaded, in eval."""
    fresh = build()
    apply_shape_spec(fresh, json.loads(json.dumps(export_shape_spec(model, reference=fresh))))
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh.eval()


@pytest.fixture
def rebuild() -> Callable[[torch.nn.Module, Callable[[], torch.nn.Module]], torch.nn.Module]:
    """:func:`rebuilt_from_shape_spec`: ``rebuild(model, build)``."""
    return rebuilt_from_shape_spec


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import a program by its path from the repository root: ``load_script("benchmarks/benchmark.py")``."""
    return _load_by_path
