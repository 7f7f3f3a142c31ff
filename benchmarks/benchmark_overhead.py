"""Trainer overhead: ``PruningTrainer(pruning_method="none")`` vs the plain ``transformers.Trainer``.

Both train the same model (one wrapper that maps ``pixel_values`` to logits, so both compute the
same cross-entropy) on the same data with the same arguments, alternating A/B for ``--repeats``
rounds; the median ``train_runtime`` of each is compared::

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/benchmark_overhead.py --threads 1
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, field

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import HfArgumentParser, Trainer, TrainingArguments

from hf_prune import PruningArguments, PruningTrainer
from hf_prune.data import collate_image_batch, load_image_classification_data, with_transforms
from hf_prune.models import load_model


@dataclass
class OverheadArguments:
    model: str = field(default="cifar_resnet20", metadata={"help": "timm model name."})
    max_steps: int = field(default=60, metadata={"help": "Optimizer steps per timed run."})
    batch_size: int = field(default=128, metadata={"help": "Training batch size."})
    repeats: int = field(default=3, metadata={"help": "A/B rounds; the median is reported."})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (default: torch's)."})


class _Logits(nn.Module):
    """``forward(pixel_values) -> logits``: callable the same way by both trainers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def _settings(output_dir: str, options: OverheadArguments) -> dict:
    return dict(
        output_dir=output_dir, max_steps=options.max_steps, per_device_train_batch_size=options.batch_size,
        learning_rate=0.05, optim="sgd", report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0, label_names=["labels"], remove_unused_columns=False,
    )


def _time_run(kind: str, options: OverheadArguments, train_dataset) -> float:
    torch.manual_seed(0)
    model = _Logits(timm.create_model(options.model, num_classes=10))
    with tempfile.TemporaryDirectory() as output_dir:
        if kind == "Trainer":
            trainer = Trainer(model=model, args=TrainingArguments(**_settings(output_dir, options)),
                              train_dataset=train_dataset, data_collator=collate_image_batch,
                              compute_loss_func=_cross_entropy)
        else:
            args = PruningArguments(pruning_method="none", **_settings(output_dir, options))
            trainer = PruningTrainer(model=model, args=args, train_dataset=train_dataset,
                                     data_collator=collate_image_batch)
        return trainer.train().metrics["train_runtime"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    (options,) = HfArgumentParser(OverheadArguments).parse_args_into_dataclasses(args=argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    data = load_image_classification_data("builtin:mnist5k", seed=0)
    data = with_transforms(data, load_model(options.model, num_labels=10).data_config, hflip=False)
    times: dict[str, list[float]] = {"Trainer": [], "PruningTrainer": []}
    _time_run("Trainer", options, data.train)  # warm-up: imports, allocator, kernel choice
    for _ in range(options.repeats):
        for kind in times:
            times[kind].append(_time_run(kind, options, data.train))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    ratio = medians["PruningTrainer"] / medians["Trainer"]
    print(f"{options.max_steps} steps of {options.model}, batch {options.batch_size}, {options.repeats} A/B rounds")
    for kind, values in times.items():
        print(f"{kind:15} median {medians[kind]:7.2f} s   runs {', '.join(f'{v:.2f}' for v in values)}")
    print(f"PruningTrainer(pruning_method='none') / Trainer = {ratio:.3f}x")
    return {**medians, "ratio": ratio}


if __name__ == "__main__":
    main()
