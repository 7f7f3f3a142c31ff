"""Train an image classifier and prune it structurally in the same run.

Runs under ``python``, ``accelerate launch`` and ``torchrun``. With no arguments it runs the
embedded offline default: ``cifar_resnet20`` on ``builtin:mnist5k`` (5000 real MNIST digits),
one-shot magnitude pruning to half the MACs, a few CPU minutes. Every ``TrainingArguments``
flag works, e.g.::

    accelerate launch scripts/prune_image_classification.py \\
        --model_name_or_path timm/resnet50.a1_in1k --pretrained --dataset_name imagenet-1k \\
        --pruning_method magnitude --target_flops_reduction 0.45 --num_train_epochs 90 --bf16
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, set_seed

from hf_prune import AutoPrunedModel, PruningArguments, PruningTrainer, count_macs_params
from hf_prune.hub import image_processor_for
from hf_prune.data import collate_image_batch, load_image_classification_data, with_transforms
from hf_prune.metrics import compute_topk_metrics
from hf_prune.trainer.rewiring import full_precision
from hf_prune.models.forward import logits_of
from hf_prune.models import load_model

# Defaults of the embedded job; any flag given on the command line overrides them.
DEMO_DEFAULTS = [
    "--output_dir", "outputs/cifar_resnet20-mnist5k-magnitude",
    "--num_train_epochs", "4",
    "--per_device_train_batch_size", "128",
    "--per_device_eval_batch_size", "256",
    "--learning_rate", "0.1",
    "--optim", "sgd",
    "--optim_args", "momentum=0.9,nesterov=true",
    "--weight_decay", "5e-4",
    "--lr_scheduler_type", "cosine",
    "--eval_strategy", "epoch",
    "--save_strategy", "no",
    "--logging_steps", "10",
    "--report_to", "none",
    "--eval_around_prune",
    "--dataloader_num_workers", "0",
]


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="cifar_resnet20",
        metadata={"help": "A timm name (or timm/<name> Hub id), a transformers Hub id, or a local model directory."},
    )
    pretrained: bool = field(default=False, metadata={"help": "Load pretrained weights (needs the Hub or a local dir)."})
    image_size: int | None = field(default=None, metadata={"help": "Override the model's input resolution."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default="builtin:mnist5k",
        metadata={"help": "A Hub dataset (e.g. uoft-cs/cifar10) or builtin:mnist5k / builtin:digits (offline)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_dir: str | None = field(default=None, metadata={"help": "A local image folder for training (class subfolders)."})
    validation_dir: str | None = field(default=None, metadata={"help": "A local image folder for validation."})
    validation_split: float = field(default=0.2, metadata={"help": "Stratified share held out when there is no validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation set (debugging)."})


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((ModelArguments, DataArguments, PruningArguments))


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (after the demo defaults), train, prune, save, reload and report."""
    model_args, data_args, training_args = make_parser().parse_args_into_dataclasses(
        args=DEMO_DEFAULTS + list(sys.argv[1:] if argv is None else argv)
    )
    set_seed(training_args.seed)
    data = load_image_classification_data(
        data_args.dataset_name if not data_args.train_dir else None,
        train_dir=data_args.train_dir,
        validation_dir=data_args.validation_dir,
        dataset_config_name=data_args.dataset_config_name,
        validation_split=data_args.validation_split,
        seed=training_args.seed,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
    )
    loaded = load_model(
        model_args.model_name_or_path,
        num_labels=len(data.labels),
        pretrained=model_args.pretrained,
        id2label=dict(enumerate(data.labels)),
        image_size=model_args.image_size,
    )
    # Mirrored digits are other glyphs: no horizontal flips for the builtin digit sets.
    hflip = not (data_args.dataset_name or "").startswith("builtin:")
    data = with_transforms(data, loaded.data_config, hflip=hflip)
    trainer = PruningTrainer(
        model=loaded.model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collate_image_batch,
        compute_metrics=compute_topk_metrics,
        processing_class=image_processor_for(loaded.data_config, loaded.source),
    )
    example = trainer._example_inputs()
    dense_macs, dense_params = count_macs_params(trainer.model, example)
    train_output = trainer.train()
    final = trainer.evaluate()
    trainer.create_model_card(
        dataset=data_args.dataset_name or data_args.train_dir,
        dataset_tags=_hub_dataset_id(data_args.dataset_name),
        finetuned_from=model_args.model_name_or_path if model_args.pretrained else None,
    )
    trainer.save_model()
    macs, params = count_macs_params(trainer.model, example)

    report = {
        "model": model_args.model_name_or_path,
        "dataset": data_args.dataset_name or data_args.train_dir,
        "pruning_method": training_args.pruning_method,
        "target_flops_reduction": training_args.target_flops_reduction,
        "dense": {"macs": dense_macs, "params": dense_params, **_metrics_before_prune(trainer)},
        "pruned": {"macs": macs, "params": params, "top1": final.get("eval_top1"), "top5": final.get("eval_top5")},
        "macs_reduction": 1 - macs / dense_macs,
        "train_runtime": train_output.metrics["train_runtime"],
        "pruning_events": trainer.pruning_events,
        "method_state": trainer.pruning_method.state_dict(),
        "reload_max_abs_diff": (
            _reload_difference(trainer, example) if trainer.is_world_process_zero() else None
        ),
    }
    if trainer.is_world_process_zero():
        _write_report(training_args.output_dir, report)
        print(_table(report))
    return report


def _metrics_before_prune(trainer: PruningTrainer) -> dict:
    events = [e for e in trainer.pruning_events if e.get("metrics_before")]
    if not events:
        return {"top1": None, "top5": None}
    metrics = events[0]["metrics_before"]
    return {"top1": metrics.get("eval_before_prune_top1"), "top5": metrics.get("eval_before_prune_top5")}


def _reload_difference(trainer: PruningTrainer, example: torch.Tensor) -> float:
    """Load the saved directory with ``AutoPrunedModel`` (no script code, no pickle) and compare fp32 logits."""
    reloaded = AutoPrunedModel.from_pretrained(trainer.args.output_dir, device=example.device)
    trainer.model.eval()
    with torch.no_grad(), full_precision(trainer.model):  # both in fp32, also after a bf16/fp16 run
        a, b = reloaded(example), trainer.model(example)
    return float((logits_of(a) - logits_of(b)).abs().max())


def _hub_dataset_id(name: str | None) -> str | None:
    return name if name and not name.startswith("builtin:") else None


def _write_report(output_dir: str, report: dict) -> None:
    path = os.path.join(output_dir, "pruning_report.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def _fmt(value, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"


def _table(report: dict) -> str:
    rows = [("dense (before pruning)", report["dense"]), ("pruned (end of training)", report["pruned"])]
    lines = [
        f"{'':26} {'top-1 %':>8} {'top-5 %':>8} {'MACs (M)':>9} {'params (M)':>10}",
        *(
            f"{label:26} {_fmt(r['top1'], 100):>8} {_fmt(r['top5'], 100):>8} {_fmt(r['macs'], 1e-6):>9} "
            f"{_fmt(r['params'], 1e-6, 3):>10}"
            for label, r in rows
        ),
        f"MACs reduction {report['macs_reduction']:.1%} (target {report['target_flops_reduction']:.0%}); "
        f"reloaded with AutoPrunedModel.from_pretrained: max |logit diff| = {report['reload_max_abs_diff']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
