"""``PruningTrainer``: a ``transformers.Trainer`` that physically prunes while it trains.

The training loop is the Trainer's own. A callback asks the pruning method for a plan after
every optimizer step and at every epoch end; when one comes, the trainer removes the channels
and has :mod:`~hf_prune.trainer.rewiring` rebuild everything that held the old parameters
(optimizer with sliced or fresh state, LR scheduler at the same position, the accelerate/DDP
wrapper). The loop itself is not copied: besides ``compute_loss`` (timm models return bare
logits) and ``training_step`` (the loop keeps the wrapper of the epoch's start in a local), the
overrides are the save/load/push entry points, which write and read slim models. What is saved
besides the weights lives in :mod:`~hf_prune.trainer.pruning_state`, the card in
:mod:`~hf_prune.trainer.card`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from accelerate.utils import broadcast_object_list
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.image_processing_utils import BaseImageProcessor
from transformers.trainer_utils import HubStrategy, get_last_checkpoint
from transformers.utils.hub import PushInProgress, hf_api
from transformers.utils import logging

from hf_prune.hub import AutoPrunedModel, ModelSource, save_pretrained
from hf_prune.hub.preprocessing import PREPROCESSOR_NAME
from hf_prune.hub.pretrained import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME
from hf_prune.methods import PruningContext, PruningMethod, PruningPlan, create_method
from hf_prune.models.forward import logits_of
from hf_prune.structure import LatencyModel, LatencyProfile, MacsModel, StructureGraph
from hf_prune.structure.widths import repeated_block_ties, width_multiples
from hf_prune.trainer._batch_norm import calibration_batches, recalibrated_batch_norm
from hf_prune.trainer.card import RunFacts, card_figures, render_card, write_widths_plot
from hf_prune.trainer.latency_target import latency_device, latency_summary, measure_after_prune_ms, resolve_profile
from hf_prune.trainer.pruning_config import PruningArguments
from hf_prune.trainer.pruning_state import PruningRecord, run_identity
from hf_prune.trainer.rewiring import full_precision, rebuild_optimizer, rewrap_model

logger = logging.get_logger(__name__)


class _PruningCallback(TrainerCallback):
    """Forwards the Trainer's events to the pruning method and applies its plans.

    A dense method (``is_dense``) gets no call at all: no tracing, no per-step work, no broadcast.
    """

    def __init__(self, trainer: PruningTrainer) -> None:
        self.trainer = trainer

    def _active(self) -> bool:
        return not self.trainer.pruning_method.is_dense

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._train_started = time.perf_counter()
        if self._active():
            self.trainer._on_train_begin()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._active():
            self.trainer._run_hook(self.trainer.pruning_method.on_pre_optimizer_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self._active():
            self.trainer._maybe_prune(self.trainer.pruning_method.on_step_end)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._active():
            self.trainer._maybe_prune(self.trainer.pruning_method.on_epoch_end)

    def on_train_end(self, args, state, control, **kwargs):
        if self._active():
            self.trainer._on_train_end()


class PruningTrainer(Trainer):
    """Trains an image classifier and prunes it structurally during training.

    Args:
        model: a timm model (returns logits) or a transformers image classifier.
        args: :class:`PruningArguments`.
        pruning_method: a :class:`~hf_prune.methods.PruningMethod`; by default the one named by
            ``args.pruning_method``.
        example_inputs: a batch used to trace the model and count MACs; by default one image
            of the training set.
        processing_class: (a ``transformers.Trainer`` argument) the eval preprocessing as an
            image processor (:func:`hf_prune.hub.image_processor_for`); saved with the model so that
            ``pipeline("image-classification")`` preprocesses as evaluation did (exactly, when the eval
            split is transformed by it: ``hf_prune.data.with_transforms(..., image_processor=...)``).
        **kwargs: everything else ``transformers.Trainer`` accepts (datasets, collator,
            ``compute_metrics``, callbacks, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        args: PruningArguments,
        pruning_method: PruningMethod | None = None,
        example_inputs: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, PruningArguments):
            raise TypeError(f"PruningTrainer needs PruningArguments, got {type(args).__name__}")
        if args.label_names is None:
            args.label_names = ["labels"]  # timm forwards have no `labels` argument to infer it from
        super().__init__(model=model, args=args, **kwargs)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError(
                "FSDP and DeepSpeed are not supported by hf_prune yet (the accelerate config enables one): "
                "use DDP (accelerate launch --multi_gpu) instead."
            )
        self.model_accepts_loss_kwargs = False  # compute_loss returns a batch mean
        self.pruning_method = pruning_method or create_method(args.pruning_method)
        self.example_inputs = example_inputs
        self.model_source = ModelSource.from_model(self.model)
        self.dense_macs: int | None = None
        self.pruning_events: list[dict[str, Any]] = []
        self.width_multiples: dict[str, int] | None = None
        self._graph: StructureGraph | None = None
        self._macs: MacsModel | None = None
        self._latency: LatencyModel | None = None
        self.latency_profile: LatencyProfile | None = None
        self._restored_method_state: dict[str, Any] | None = None
        self._recovery_batches: Iterator[dict[str, Any]] | None = None
        self._train_started = time.perf_counter()
        self._card_kwargs: dict[str, Any] = {}
        self._write_card = False
        self._published_figures: list[str] = []
        self.add_callback(_PruningCallback(self))

    # ------------------------------------------------------------------ Trainer overrides
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy on the logits of a timm or transformers model (label smoothing honoured)."""
        logits = logits_of(model(inputs["pixel_values"]))
        loss = F.cross_entropy(logits.float(), inputs["labels"], label_smoothing=self.args.label_smoothing_factor)
        return (loss, {"logits": logits}) if return_outputs else loss

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """``Trainer.train``; a resumed run also restores the pruning method's state and events."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True, but {self.args.output_dir} holds no checkpoint")
        if resume_from_checkpoint:
            self._read_pruning_state(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Train ``self.model_wrapped``: after a prune the loop's local ``model`` is the stale wrapper.

        The loop entered DDP's ``no_sync`` (a gradient-accumulation micro-batch) on that stale
        wrapper; it is entered on the live one too, else DDP would all-reduce every micro-batch.
        """
        live = self.model_wrapped
        if model is live or getattr(model, "require_backward_grad_sync", True):
            return super().training_step(live, inputs, num_items_in_batch)
        with live.no_sync():
            return super().training_step(live, inputs, num_items_in_batch)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the slim model for ``AutoPrunedModel.from_pretrained``: safetensors, config, card.

        ``output_dir`` gets ``model.safetensors``, ``config.json`` (source architecture + shape
        spec + pruning facts), ``README.md`` (the model card, with measured latency) and its
        plots, ``training_args.json`` and ``pruning_state.json``. No pickles. Checkpoints
        (``_internal_call``) get the same minus card and plots.
        """
        self._write_card = not _internal_call
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self._write_card = False

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return  # one writer; every rank holds the same model
        if self.model_source is None:
            raise ValueError(
                f"cannot save a {type(self.model).__name__}: hf_prune saves timm and transformers models "
                "(built with timm.create_model or transformers), whose architecture it can record"
            )
        facts = self._run_facts()
        with tempfile.TemporaryDirectory() as scratch:
            figures = card_figures(facts, scratch) if self._write_card else {}
            card = None
            if self._write_card:
                self._published_figures = list(figures)
                card = render_card(facts, figures, self.hub_model_id or output_dir, self._card_kwargs)
            with full_precision(facts.model):  # the save compares reloaded logits: fp32 on both sides
                save_pretrained(
                    facts.model,
                    output_dir,
                    source=self.model_source,
                    pruning=facts.record.summary(
                        self.args.target_flops_reduction, list(facts.input_size), facts.macs, _num_params(facts.model)
                    ),
                    model_card=card,
                    extra_files=figures,
                    image_processor=self._image_processor(),
                    labels=self._class_names(),
                )
        facts.record.save(output_dir, self.args)

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        dense_reference: dict[str, Any] | str | None = None,
    ) -> None:
        """Set the card's metadata (license, base model, dataset id and name, tags); later saves use it.

        ``finetuned_from`` becomes the card's ``base_model`` only when it is a Hub id (not a local
        path). ``dense_reference`` adds a trained dense model's row: ``{"top1": ..., "top5": ...}``
        or the path of a dense run's ``eval_results.json``.

        The card itself (results, latency, plots, arguments, citation) is written by
        :meth:`save_model`, and rewritten here if ``output_dir`` already holds a saved model.
        """
        given = {"license": license, "tags": tags, "model_name": model_name, "finetuned_from": finetuned_from,
                 "dataset_tags": dataset_tags, "dataset": dataset, "dense_reference": dense_reference}
        self._card_kwargs.update({key: value for key, value in given.items() if value is not None})
        if self.is_world_process_zero() and os.path.isfile(os.path.join(self.args.output_dir, WEIGHTS_NAME)):
            self.save_model()

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ):
        """Save the model with its card and upload exactly what ``from_pretrained`` needs, plus the card.

        ``kwargs`` go to :meth:`create_model_card`. Checkpoints, logs and training state stay local.
        """
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self._card_kwargs.update({key: value for key, value in kwargs.items() if value is not None})
        self._card_kwargs.setdefault("model_name", self.hub_model_id.split("/")[-1])
        self._write_card = True
        try:
            super().save_model(_internal_call=True)
        finally:
            self._write_card = False
        if not self.is_world_process_zero():
            return None
        return hf_api().upload_folder(
            repo_id=self.hub_model_id,
            folder_path=self.args.output_dir,
            allow_patterns=[
                CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, *self._published_figures,
                *([PREPROCESSOR_NAME] if self._image_processor() else []),
            ],
            commit_message=commit_message,
            token=token,
            revision=revision if revision is not None else self.args.hub_revision,
            run_as_future=not blocking,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Mid-training pushes (``hub_strategy="every_save"``): the checkpoint's loadable files only.

        Replaces the Trainer's version, which also writes and uploads ``training_args.bin`` (a pickle);
        the preprocessing goes too, so every pushed revision loads in ``pipeline``.
        """
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        job = hf_api().upload_folder(
            repo_id=self.hub_model_id,
            folder_path=checkpoint_folder,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, *([PREPROCESSOR_NAME] if self._image_processor() else [])],
            commit_message=f"Training in progress, step {self.state.global_step}",
            token=self.args.hub_token,
            revision=self.args.hub_revision,
            run_as_future=True,
        )
        self.push_in_progress = PushInProgress([job])

    def _run_facts(self) -> RunFacts:
        """A plain snapshot of the run for the saved files and the card."""
        model = self.accelerator.unwrap_model(self.model)
        return RunFacts(
            record=self._record(),
            args=self.args,
            log_history=self.state.log_history,
            model=model,
            source=self.model_source,
            input_size=tuple(self._example_inputs().shape[1:]),
            macs=self.dense_macs if self.pruning_method.is_dense else self.macs_model.base_macs,
            widths=self._layer_widths(),
            method_figures=self.pruning_method.figures,
            latency=self.latency_summary(),
        )

    def _image_processor(self) -> BaseImageProcessor | None:
        """The eval preprocessing saved with the model (``processing_class``, when it is an image processor)."""
        return self.processing_class if isinstance(self.processing_class, BaseImageProcessor) else None

    def _class_names(self) -> list[str] | None:
        """The names of the training set's one ``ClassLabel`` column (a timm model carries none itself)."""
        features = getattr(self.train_dataset, "features", None) or {}
        names = [feature.names for feature in features.values() if isinstance(feature, datasets.ClassLabel)]
        return names[0] if len(names) == 1 else None

    def _record(self) -> PruningRecord:
        return PruningRecord(
            self.pruning_method.name, self.pruning_method.state_dict(), self.dense_macs, self.pruning_events,
            self._run_identity(), self.width_multiples or {},
        )

    def _run_identity(self) -> dict[str, Any]:
        model = self.accelerator.unwrap_model(self.model)
        config = getattr(model, "config", None)
        identity = {
            "architecture": self.model_source.architecture if self.model_source else type(model).__name__,
            "num_classes": getattr(model, "num_classes", None) or getattr(config, "num_labels", None),
        }
        return run_identity(self.args, self.pruning_method, identity)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Rebuild the checkpoint's (possibly slim) architecture and load every weight strictly.

        Replaces transformers' loader, which cannot follow changed shapes and, in 5.23, silently
        skips renamed keys (huggingface/transformers#43701).
        """
        if not os.path.isfile(os.path.join(resume_from_checkpoint, CONFIG_NAME)):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._replace_model(AutoPrunedModel.from_pretrained(resume_from_checkpoint, device=self.args.device))

    def _load_best_model(self) -> None:
        """``load_best_model_at_end`` across prune events: the best checkpoint's architecture and weights."""
        checkpoint = self.state.best_model_checkpoint
        if not os.path.isfile(os.path.join(checkpoint, CONFIG_NAME)):
            return super()._load_best_model()
        logger.info(f"Loading best model from {checkpoint} (score: {self.state.best_metric}).")
        self._replace_model(AutoPrunedModel.from_pretrained(checkpoint, device=self.args.device))

    def _replace_model(self, restored: nn.Module) -> None:
        restored.train(self.model.training)
        self.model = self.model_wrapped = self.callback_handler.model = restored
        self._graph = self._macs = self._latency = None

    def _read_pruning_state(self, checkpoint: str) -> None:
        record = PruningRecord.load(checkpoint, self._run_identity(), self.args.resume_with_changed_pruning)
        if record is not None:
            self._restored_method_state = record.method_state
            self.dense_macs, self.pruning_events = record.dense_macs, record.events
            self.width_multiples = record.width_multiples or None

    # ------------------------------------------------------------------ structure
    @property
    def structure(self) -> StructureGraph:
        """The prunable structure of the model now (rebuilt lazily after every prune)."""
        if self._graph is None:
            self._graph = StructureGraph(self.model, self._example_inputs(), self.args.ignored_layers)
        return self._graph

    @property
    def macs_model(self) -> MacsModel:
        """Analytic MACs of the current structure, per image."""
        if self._macs is None:
            self._macs = MacsModel(self.structure, self._example_inputs())
        return self._macs

    @property
    def latency_model(self) -> LatencyModel | None:
        """Predicted latency of the current structure; ``None`` without a latency target or profile."""
        if self._latency is None and self.latency_profile is not None:
            self._latency = LatencyModel(self.structure, self.latency_profile, self._example_inputs())
        return self._latency

    def _example_inputs(self) -> torch.Tensor:
        if self.example_inputs is None:
            if self.train_dataset is None:
                raise ValueError("PruningTrainer needs a train_dataset or example_inputs to trace the model")
            pixels = self.data_collator([self.train_dataset[0]])["pixel_values"]
            self.example_inputs = pixels[:1]
        return self.example_inputs.to(next(self.model.parameters()).device)

    def _context(self) -> PruningContext:
        return PruningContext(
            model=self.model,
            graph=self.structure,
            macs=self.macs_model,
            dense_macs=self.dense_macs,
            args=self.args,
            state=self.state,
            learning_rate=self._current_learning_rate(),
            train_dataset=self.train_dataset,
            data_collator=self.data_collator,
            log=self.log,
            example_inputs=self._example_inputs(),
            latency=self.latency_model,
            dense_latency_ms=self.latency_profile.predicted_dense_ms if self.latency_profile else None,
            width_multiples=self.width_multiples or {},
            width_ties=repeated_block_ties(self.structure.groups) if self.args.uniform_widths else [],
        )

    def _current_learning_rate(self) -> float:
        if self.optimizer is None:
            return self.args.learning_rate
        return float(self.optimizer.param_groups[0]["lr"])

    def _on_train_begin(self) -> None:
        if self.dense_macs is None:
            self.dense_macs = self.macs_model.base_macs
        if self.args.tracks_latency and self.latency_profile is None:
            self.latency_profile = self._shared_latency_profile()
        if self.width_multiples is None:
            self.width_multiples = self._dense_width_multiples()
        self._run_hook(self.pruning_method.on_train_begin)
        if self._restored_method_state is not None:
            self.pruning_method.load_state_dict(self._restored_method_state)
            self._restored_method_state = None

    def _shared_latency_profile(self) -> LatencyProfile:
        """The main process resolves (reads or measures) the profile; under DDP every rank gets its copy.

        An error (a profile that does not fit) is raised on every rank, not only on the main one.
        """
        result: LatencyProfile | ValueError | None = None
        if self.accelerator.is_main_process:
            try:
                with full_precision(self.model):
                    result = resolve_profile(
                        self.args, self.structure, self._example_inputs(), latency_device(self.args, self.args.device)
                    )
            except ValueError as error:
                result = error
        if self.accelerator.num_processes > 1:
            result = broadcast_object_list([result], from_process=0)[0]
        if isinstance(result, ValueError):
            raise result
        return result

    def _dense_width_multiples(self) -> dict[str, int]:
        """``round_to``'s multiple of every group of the model before any prune, logged once."""
        device = next(self.model.parameters()).device
        multiples = width_multiples(self.structure.groups, self.args.round_to, device, self.structure.model)
        rounded = {name: m for name, m in multiples.items() if m > 1}
        logger.info(
            f"round_to={self.args.round_to} on {device.type}: {len(rounded)} of {len(multiples)} groups keep multiples "
            f"of their units: {rounded}"
        )
        return multiples

    def _maybe_prune(self, hook) -> None:
        plan = self._decide(hook)
        while plan is not None:
            self.apply_pruning_plan(plan)
            if plan.recovery_steps:
                self.recover(plan.recovery_steps)
            plan = self._decide(hook) if plan.continues else None

    def _decide(self, hook) -> PruningPlan | None:
        """Run a method hook on every process; with several, rank 0's plan and method state win.

        Every rank runs the hook: methods may all-reduce inside it (LAASP's subset losses) or
        change the weights (OCSP's shrink), identically on the identical DDP weights. Float
        reductions can still differ in the last bit between ranks, and a tie broken differently
        would prune different units. So rank 0's plan and the method's ``state_dict`` (what it
        decides from next time: OCSP's pruning set and stability history, LAASP's phase) are
        broadcast and every other rank adopts them: all ranks apply the same plan and start the
        next hook from the same state.
        """
        plan = self._run_hook(hook)
        if self.accelerator.num_processes == 1:
            return plan
        decision = broadcast_object_list([plan, self.pruning_method.state_dict()], from_process=0)
        if not self.accelerator.is_main_process:
            self.pruning_method.load_state_dict(decision[1])
        return decision[0]

    def _run_hook(self, hook: Callable[[PruningContext], Any]) -> Any:
        """Call a method hook with mixed precision off: decisions must not depend on bf16 rounding."""
        with full_precision(self.model):
            return hook(self._context())

    def _on_train_end(self) -> None:
        self._run_hook(self.pruning_method.on_train_end)
        if self.args.should_save:
            write_widths_plot(self._layer_widths(), self.pruning_method.name, self.args.output_dir)

    def _layer_widths(self) -> dict[str, tuple[int, int, str]]:
        """``{group: (units before the first prune, units now, kind)}`` of every group, in model order.

        Empty before the first prune (there is no structure to show)."""
        first = {n: w[0] for e in reversed(self.pruning_events) for n, w in e["widths"].items()}
        order = {name: index for index, (name, _) in enumerate(self.model.named_modules())} if first else {}
        groups = sorted(self.structure.groups, key=lambda g: order.get(g.name, len(order))) if first else []
        return {g.name: (first.get(g.name, g.num_units), g.num_units, g.kind) for g in groups}

    def recover(self, num_steps: int) -> float:
        """Train ``num_steps`` extra optimizer steps at the current learning rate.

        The LR schedule, the global step and the epoch do not move (recovery between the steps
        of a multi-step prune, as in LAASP). Each step accumulates ``gradient_accumulation_steps``
        micro-batches, gradients synchronized on the last one, as in training. Returns the mean
        training loss of those steps.
        """
        model = self.model_wrapped
        model.train()
        accumulation = self.args.gradient_accumulation_steps
        # training_step divides each micro-batch's loss by this; the training loop sets it per step.
        saved = getattr(self, "current_gradient_accumulation_steps", accumulation)
        self.current_gradient_accumulation_steps = accumulation
        losses = []
        try:
            for _ in tqdm(range(num_steps), desc="recovery", leave=False, disable=self.args.disable_tqdm):
                loss = 0.0
                for micro_batch in range(accumulation):
                    last = micro_batch == accumulation - 1
                    with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                        loss += float(self.training_step(model, self._next_recovery_batch()))
                if self.args.max_grad_norm:
                    self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                losses.append(loss)
        finally:
            self.current_gradient_accumulation_steps = saved
        mean_loss = sum(losses) / max(len(losses), 1)
        self.log({"pruning/recovery_loss": mean_loss, "pruning/recovery_steps": float(num_steps)})
        return mean_loss

    def _next_recovery_batch(self) -> dict[str, Any]:
        for _ in range(2):
            if self._recovery_batches is None:
                self._recovery_batches = iter(self.get_train_dataloader())
            batch = next(self._recovery_batches, None)
            if batch is not None:
                return batch
            self._recovery_batches = None  # epoch exhausted: start a new pass
        raise ValueError("the training set yields no batches for recovery training")

    # ------------------------------------------------------------------ pruning
    def apply_pruning_plan(self, plan: PruningPlan) -> dict[str, Any]:
        """Prune the model physically and rebuild optimizer, scheduler and wrappers.

        Returns the logged event: MACs/params before and after, reduction vs. the dense model,
        the width of every changed group, and the attention layers kept whole (of no known family).
        """
        eval_started, eval_cpu_started = time.perf_counter(), time.process_time()
        metrics_before = self._evaluate_for_event("before", plan)
        eval_seconds, eval_cpu_seconds = time.perf_counter() - eval_started, time.process_time() - eval_cpu_started
        macs_before = self.macs_model.base_macs
        params_before = _num_params(self.model)
        widths = {g.name: (g.num_units, len(plan.keep[g.name])) for g in self.structure.groups if g.name in plan.keep}
        kept_attention = self.structure.kept_attention
        old_params = dict(self.model.named_parameters())
        index_maps = self.structure.apply(plan.keep)
        self._graph = self._macs = self._latency = None
        self._rebuild_optimizer(old_params, index_maps)
        rewrap_model(self)

        macs_after = self.macs_model.base_macs
        eval_started, eval_cpu_started = time.perf_counter(), time.process_time()
        metrics_after = self._evaluate_for_event("after", plan)
        eval_seconds += time.perf_counter() - eval_started
        eval_cpu_seconds += time.process_time() - eval_cpu_started
        event = {
            "metrics_before": metrics_before,
            "metrics_after": metrics_after,
            "eval_seconds": eval_seconds,  # eval_around_prune's share of train_runtime
            "eval_cpu_seconds": eval_cpu_seconds,  # the same in CPU process time
            "global_step": self.state.global_step,
            "epoch": self.state.epoch,
            "train_seconds": time.perf_counter() - self._train_started,
            "reason": plan.reason,
            "macs_before": macs_before,
            "macs_after": macs_after,
            "params_before": params_before,
            "params_after": _num_params(self.model),
            "macs_reduction": 1.0 - macs_after / self.dense_macs,
            "widths": widths,
            "kept_attention": kept_attention,
        }
        if self.latency_profile is not None:
            event.update(self._latency_after_prune(plan.last))
        self.pruning_events.append(event)
        logged = ("macs_after", "params_after", "macs_reduction", "latency_ms_predicted", "latency_ms_measured",
                  "latency_ms_dense_measured")
        self.log({f"pruning/{k}": float(event[k]) for k in logged if event.get(k) is not None})
        self._announce(event)
        return event

    def _latency_after_prune(self, last: bool) -> dict[str, float | None]:
        """Predicted and (on the main process) measured latency of the slim model, in ms; after the method's
        last prune also the dense architecture's, timed in turns with it (rebuilding and timing it at every
        LAASP step would cost seconds each for a figure only the last prune reports)."""
        measured = dense = None
        if self.accelerator.is_main_process:
            with full_precision(self.model):
                measured, dense = measure_after_prune_ms(
                    self.model, self.model_source if last else None, tuple(self._example_inputs().shape[1:]),
                    self.latency_profile, latency_device(self.args, self.args.device),
                )
        return {"latency_ms_predicted": self.latency_model.base_cost, "latency_ms_measured": measured,
                "latency_ms_dense_measured": dense}

    def latency_summary(self) -> dict[str, Any] | None:
        """Predicted vs measured latency after the last prune (``None`` without a latency target or profile)."""
        return latency_summary(self.latency_profile, self.pruning_events, self.args.target_latency_reduction)

    def _announce(self, event: dict[str, Any]) -> None:
        """One plain line per prune, printed like the Trainer's own logs (below the progress bar)."""
        line = (
            f"[hf_prune] pruned at step {event['global_step']} (epoch {event['epoch'] or 0:.2f}): MACs "
            f"{event['macs_before'] / 1e6:.2f}M -> {event['macs_after'] / 1e6:.2f}M "
            f"({event['macs_reduction']:.1%} below dense), params {event['params_before'] / 1e6:.3f}M -> "
            f"{event['params_after'] / 1e6:.3f}M, method {self.pruning_method.name}: {event['reason']}"
        )
        if self.is_world_process_zero():
            tqdm.write(line)

    def _evaluate_for_event(self, when: str, plan: PruningPlan) -> dict[str, float] | None:
        args = self.args
        if not args.eval_around_prune or self.eval_dataset is None or (args.eval_around_prune_events == "last" and not plan.last):
            return None
        if not self.args.eval_after_prune_bn_batches:
            return self.evaluate(metric_key_prefix=f"eval_{when}_prune")
        batches = calibration_batches(
            self.train_dataset, self.data_collator, args.per_device_train_batch_size, args.eval_after_prune_bn_batches, args.seed
        )
        with recalibrated_batch_norm(self.model, batches):
            return self.evaluate(metric_key_prefix=f"eval_{when}_prune")

    def _rebuild_optimizer(self, old_params: dict[str, nn.Parameter], index_maps: dict[str, torch.Tensor]) -> None:
        rebuild_optimizer(self, old_params, index_maps, slice_state=self.args.optimizer_state_after_prune == "slice")


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
