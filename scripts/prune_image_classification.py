"""Train an image classifier and prune it structurally in the same run.

Runs under ``python``, ``accelerate launch`` and ``torchrun``. With no arguments it runs the
embedded offline default: ``cifar_resnet20`` on ``builtin:mnist5k`` (5000 real MNIST digits),
one-shot magnitude pruning to half the MACs, a few CPU minutes. ``--help`` lists the pruning
options first, then model, data and every ``TrainingArguments`` flag, with the defaults that
apply (a CIFAR-style SGD recipe), e.g.::

    accelerate launch scripts/prune_image_classification.py \\
        --model_name_or_path timm/resnet50.a1_in1k --pretrained --dataset_name imagenet-1k \\
        --pruning_method magnitude --target_flops_reduction 0.45 --num_train_epochs 90 --bf16
"""

from __future__ import annotations

import json
import os
from argparse import ArgumentParser
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from transformers import HfArgumentParser

from hf_prune import PruningArguments

if TYPE_CHECKING:
    import torch

    from hf_prune import PruningTrainer

DEMO_DATASET = "builtin:mnist5k"
# The training recipe of the embedded job (CIFAR-style SGD), which --help shows as the defaults.
TRAINING_DEFAULTS = {
    "num_train_epochs": 4,
    "per_device_train_batch_size": 128,
    "per_device_eval_batch_size": 256,
    "learning_rate": 0.1,
    "optim": "sgd",
    "optim_args": "momentum=0.9,nesterov=true",
    "weight_decay": 5e-4,
    "lr_scheduler_type": "cosine",
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "logging_steps": 10,
    "eval_around_prune": True,
}
TRAINING_HEADING = "Training (every transformers.TrainingArguments flag)"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="cifar_resnet20",
        metadata={"help": "A timm name (or timm/<name> Hub id), a transformers Hub id, or a local model directory."},
    )
    pretrained: bool = field(default=False, metadata={"help": "Load pretrained weights (needs the Hub or a local dir)."})
    image_size: int | None = field(default=None, metadata={"help": "Override the model's input resolution."})
    dense_reference: str | None = field(
        default=None,
        metadata={"help": "A dense run's eval_results.json (every run writes one): the card shows it as the trained "
                          "dense reference beside the slim model."},
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"A Hub dataset (e.g. uoft-cs/cifar10) or builtin:mnist5k / builtin:digits (offline). "
            f"Default: {DEMO_DATASET} unless --train_dir is given."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_dir: str | None = field(
        default=None, metadata={"help": "A local image folder for training: one sub-folder of images per class."}
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "A local image folder for validation, laid out as --train_dir."}
    )
    validation_split: float = field(default=0.2, metadata={"help": "Stratified share held out when there is no validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation set (debugging)."})

    def __post_init__(self) -> None:
        if self.dataset_name and self.train_dir:
            raise ValueError("pass --dataset_name or --train_dir (with --validation_dir), not both")
        if self.validation_dir and not self.train_dir:
            raise ValueError("--validation_dir needs --train_dir")
        if not self.train_dir:
            self.dataset_name = self.dataset_name or DEMO_DATASET

    @property
    def source(self) -> str:
        """What the run trains on, as recorded in the report and the model card."""
        return self.dataset_name or self.train_dir


@dataclass
class ResumeArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over although output_dir holds checkpoints. By default a relaunched run resumes from "
            "--resume_from_checkpoint, or else from the last checkpoint in output_dir (as transformers' examples do)."
        },
    )


def make_parser() -> HfArgumentParser:
    """The CLI's parser: pruning options first under their headings, then model, data and training."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, ResumeArguments, PruningArguments),
        usage="%(prog)s [--pruning_method NAME] [--model_name_or_path NAME] [--dataset_name NAME] [options]",
    )
    parser.set_defaults(**TRAINING_DEFAULTS)
    sections = {
        **PruningArguments.argument_groups(),
        "Model": [f.name for f in fields(ModelArguments)],
        "Data": [f.name for f in fields(DataArguments)],
        "Resuming": [f.name for f in fields(ResumeArguments)] + ["resume_from_checkpoint"],
    }
    _show_under_headings(parser, sections, rest=TRAINING_HEADING)
    for action in parser._actions:
        if action.dest == "output_dir":
            action.help = "Where the slim model, its card and plots go. Default: outputs/<model>-<data>-<method>."
    return parser


def _show_under_headings(parser: ArgumentParser, sections: dict[str, list[str]], rest: str) -> None:
    """List each section's options under its heading, in order; every other option but -h under ``rest``.

    ``HfArgumentParser`` sees ``PruningArguments`` as one dataclass and puts its fields after the ~150
    ``TrainingArguments`` ones; argparse has no public call to move an option to another group, so
    the groups' action lists are edited (argparse's help reads them in this order).
    """
    ungrouped = parser._optionals
    by_dest: dict[str, list] = {}
    for action in ungrouped._group_actions:
        if action.dest != "help":
            by_dest.setdefault(action.dest, []).append(action)  # a bool's --no_<name> shares its dest
    groups = []
    for title, names in [*sections.items(), (rest, list(by_dest))]:
        group = parser.add_argument_group(title)
        for name in names:
            for action in by_dest.pop(name, []):
                ungrouped._group_actions.remove(action)
                group._group_actions.append(action)
        groups.append(group)
    parser._action_groups = [ungrouped, *groups]


def parse_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, ResumeArguments, PruningArguments]:
    """Parse the command line; unknown model or method names fail here, before any data is loaded."""
    values = vars(make_parser().parse_args(argv))  # an unknown --pruning_method is a usage error here
    from hf_prune.models import check_model_name  # imports transformers' model code: not needed for --help

    check_model_name(values["model_name_or_path"])
    model_args, data_args = (
        cls(**{f.name: values.pop(f.name) for f in fields(cls)}) for cls in (ModelArguments, DataArguments)
    )
    resume_args = ResumeArguments(**{f.name: values.pop(f.name) for f in fields(ResumeArguments)})
    values["output_dir"] = values["output_dir"] or default_output_dir(model_args, data_args, values["pruning_method"])
    return model_args, data_args, resume_args, PruningArguments(**values)


def default_output_dir(model_args: ModelArguments, data_args: DataArguments, method: str) -> str:
    """``outputs/<model>-<data>-<method>``, e.g. ``outputs/cifar_resnet20-mnist5k-magnitude``."""
    def short(name: str) -> str:
        return os.path.basename(os.path.normpath(name.split(":")[-1]))

    return os.path.join("outputs", f"{short(model_args.model_name_or_path)}-{short(data_args.source)}-{method}")


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (default: the command line), train, prune, save, reload and report."""
    model_args, data_args, resume_args, training_args = parse_arguments(argv)
    # Imported once the arguments are known to be good, so that --help and argument errors come back fast.
    from transformers import set_seed

    from hf_prune import PruningTrainer, count_macs_params
    from hf_prune.data import collate_image_batch, load_image_classification_data, with_transforms
    from hf_prune.hub import image_processor_for
    from hf_prune.hub.model_dir import write_text_atomic
    from hf_prune.metrics import compute_topk_metrics
    from hf_prune.models import load_model

    set_seed(training_args.seed)
    data = load_image_classification_data(
        data_args.dataset_name,
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
    processor = image_processor_for(loaded.data_config, loaded.source)
    data = with_transforms(data, loaded.data_config, hflip=hflip, image_processor=processor)
    trainer = PruningTrainer(
        model=loaded.model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collate_image_batch,
        compute_metrics=compute_topk_metrics,
        processing_class=processor,
    )
    example = trainer._example_inputs()
    dense_macs, dense_params = count_macs_params(trainer.model, example)
    train_output = trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args, resume_args))
    final = trainer.evaluate()
    trainer.save_metrics("eval", final)  # eval_results.json: a pruned run's --dense_reference
    trainer.create_model_card(
        dataset=data_args.source,
        dataset_tags=_hub_dataset_id(data_args.dataset_name),
        finetuned_from=model_args.model_name_or_path if model_args.pretrained else None,
        dense_reference=model_args.dense_reference,
    )
    trainer.save_model()
    macs, params = count_macs_params(trainer.model, example)

    report = {
        "model": model_args.model_name_or_path,
        "dataset": data_args.source,
        "pruning_method": training_args.pruning_method,
        "target_flops_reduction": training_args.target_flops_reduction,
        "target_latency_reduction": training_args.target_latency_reduction,
        "dense": {"macs": dense_macs, "params": dense_params, **_metrics_before_prune(trainer)},
        "pruned": {"macs": macs, "params": params, "top1": final.get("eval_top1"), "top5": final.get("eval_top5")},
        "macs_reduction": 1 - macs / dense_macs,
        "latency": trainer.latency_summary(),
        "train_runtime": train_output.metrics["train_runtime"],
        "pruning_events": trainer.pruning_events,
        "method_state": trainer.pruning_method.state_dict(),
        "reload_max_abs_diff": (
            _reload_difference(trainer, example) if trainer.is_world_process_zero() else None
        ),
    }
    if trainer.is_world_process_zero():
        report_path = os.path.join(training_args.output_dir, "pruning_report.json")
        write_text_atomic(report_path, json.dumps(report, indent=2, default=str))
        print(_table(report))
    return report


def checkpoint_to_resume(training_args: PruningArguments, resume_args: ResumeArguments) -> str | None:
    """``--resume_from_checkpoint``, else the last checkpoint in ``output_dir`` unless ``--overwrite_output_dir``."""
    from transformers.trainer_utils import get_last_checkpoint

    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if resume_args.overwrite_output_dir or not os.path.isdir(training_args.output_dir):
        return None
    last = get_last_checkpoint(training_args.output_dir)
    if last is not None:
        print(f"[hf_prune] resuming from {last} (pass --overwrite_output_dir to start over)")
    return last


def _metrics_before_prune(trainer: PruningTrainer) -> dict:
    events = [e for e in trainer.pruning_events if e.get("metrics_before")]
    if not events:
        return {"top1": None, "top5": None}
    metrics = events[0]["metrics_before"]
    return {"top1": metrics.get("eval_before_prune_top1"), "top5": metrics.get("eval_before_prune_top5")}


def _reload_difference(trainer: PruningTrainer, example: torch.Tensor) -> float:
    """Load the saved directory with ``AutoPrunedModel`` (no script code, no pickle) and compare fp32 logits."""
    import torch

    from hf_prune import AutoPrunedModel
    from hf_prune.models.forward import logits_of
    from hf_prune.trainer.rewiring import full_precision

    reloaded = AutoPrunedModel.from_pretrained(trainer.args.output_dir, device=example.device)
    trainer.model.eval()
    with torch.no_grad(), full_precision(trainer.model):  # both in fp32, also after a bf16/fp16 run
        a, b = reloaded(example), trainer.model(example)
    return float((logits_of(a) - logits_of(b)).abs().max())


def _hub_dataset_id(name: str | None) -> str | None:
    return name if name and not name.startswith("builtin:") else None


def _fmt(value, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"


def _table(report: dict) -> str:
    from hf_prune.hub.model_card import measured_against

    rows = [("dense (before pruning)", report["dense"]), ("pruned (end of training)", report["pruned"])]
    lines = [
        f"{'':26} {'top-1 %':>8} {'top-5 %':>8} {'MACs (M)':>9} {'params (M)':>10}",
        *(
            f"{label:26} {_fmt(r['top1'], 100):>8} {_fmt(r['top5'], 100):>8} {_fmt(r['macs'], 1e-6):>9} "
            f"{_fmt(r['params'], 1e-6, 3):>10}"
            for label, r in rows
        ),
        f"MACs reduction {report['macs_reduction']:.1%}{_target(report['target_flops_reduction'])}; "
        f"reloaded with AutoPrunedModel.from_pretrained: max |logit diff| = {report['reload_max_abs_diff']}",
    ]
    latency = report["latency"]
    if latency is not None:
        lines.append(
            f"latency on {latency['device']} at batch {latency['batch_size']}: dense {_fmt(latency['dense_ms'])} ms, "
            f"slim {_fmt(latency['predicted_ms'])} ms predicted ({_fmt(latency['predicted_reduction'], 100, 1)} % "
            f"less), {_fmt(latency['measured_ms'])} ms measured against {measured_against(latency)} "
            f"({_fmt(latency['measured_reduction'], 100, 1)} % less)"
            f"{_target(report['target_latency_reduction'])}"
        )
    return "\n".join(lines)


def _target(value: float | None) -> str:
    return "" if value is None else f" (target {value:.0%})"


if __name__ == "__main__":
    main()
