"""Runs ``scripts/prune_image_classification.py`` in one process of a multi-process launch and records it.

``tests/test_distributed.py`` launches this file with ``torchrun`` or ``accelerate launch``; every flag
goes to the script. Each rank writes ``<output_dir>/ranks/rank<N>.json``: sha256 digests of its
parameters after every optimizer step and at every prune (before the DDP wrapper is rebuilt, which
would broadcast rank 0's weights and hide a divergence), the plans its method proposed and the plans
it applied, DDP's gradient-sync flag for every micro-batch, and per-parameter digests at the end.

Two environment variables turn on faults the test expects to be caught or tolerated:

- ``HF_PRUNE_TEST_STALE_WRAPPER=1``: never re-wrap the model after a prune (the bug the re-wrap fixes).
- ``HF_PRUNE_TEST_SKEW_RANK1=1``: rank 1 ranks units by random saliencies, i.e. its own decisions differ
  from rank 0's; broadcasting rank 0's plan and method state must still keep the ranks identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

import hf_prune.methods.magnitude
import hf_prune.methods.ocsp
import hf_prune.trainer.pruning_trainer as pruning_trainer
from hf_prune import PruningTrainer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"
RECORD: dict[str, Any] = {"steps": [], "prunes": [], "proposed": [], "micro_batches": []}


def _tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _model_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(f"{name}{tuple(param.shape)}{_tensor_digest(param)}".encode())
    return digest.hexdigest()


def _plan_digest(plan) -> str | None:
    return None if plan is None else hashlib.sha256(json.dumps(plan.keep, sort_keys=True).encode()).hexdigest()


def _patch_recording() -> None:
    original_decide = PruningTrainer._decide
    original_maybe_prune = PruningTrainer._maybe_prune
    original_apply = PruningTrainer.apply_pruning_plan
    original_rewrap = pruning_trainer.rewrap_model
    original_step = Trainer.training_step
    original_end = PruningTrainer._on_train_end
    stale = os.environ.get("HF_PRUNE_TEST_STALE_WRAPPER") == "1"

    def decide(self, hook):
        def recording_hook(context):
            plan = hook(context)
            if plan is not None:
                RECORD["proposed"].append({"step": self.state.global_step, "keep": _plan_digest(plan)})
            return plan

        return original_decide(self, recording_hook)

    def maybe_prune(self, hook):
        original_maybe_prune(self, hook)
        RECORD["steps"].append({"step": self.state.global_step, "hook": hook.__name__, "params": _model_digest(self.model)})

    def apply_pruning_plan(self, plan):
        RECORD["prunes"].append({"step": self.state.global_step, "keep": _plan_digest(plan)})
        return original_apply(self, plan)

    def rewrap(self):
        # The pruned weights before a new DDP wrapper broadcasts rank 0's (which would hide a divergence).
        RECORD["prunes"][-1]["params"] = _model_digest(self.model)
        if not stale:
            original_rewrap(self)

    def training_step(self, model, inputs, num_items_in_batch=None):
        RECORD["micro_batches"].append({
            "step": self.state.global_step, "sync_gradients": self.accelerator.sync_gradients,
            "ddp_sync": getattr(model, "require_backward_grad_sync", None), "live": model is self.model_wrapped,
        })
        return original_step(self, model, inputs, num_items_in_batch)

    def on_train_end(self):
        original_end(self)
        RECORD.update(
            rank=self.args.process_index, world_size=self.args.world_size,
            mixed_precision=self.accelerator.mixed_precision,
            final={n: [list(p.shape), _tensor_digest(p)] for n, p in self.model.named_parameters()},
            losses=[h["loss"] for h in self.state.log_history if "loss" in h],
            events=[{"step": e["global_step"], "widths": e["widths"]} for e in self.pruning_events],
        )
        path = Path(self.args.output_dir) / "ranks" / f"rank{self.args.process_index}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(RECORD, indent=1))

    PruningTrainer._decide = decide
    PruningTrainer._maybe_prune = maybe_prune
    PruningTrainer.apply_pruning_plan = apply_pruning_plan
    pruning_trainer.rewrap_model = rewrap
    Trainer.training_step = training_step
    PruningTrainer._on_train_end = on_train_end


def _random_saliencies(model, groups, fan_power=1.0):
    generator = torch.Generator().manual_seed(1234)
    return {g.name: torch.rand(g.num_units, generator=generator) for g in groups}


def main() -> None:
    _patch_recording()
    if os.environ.get("HF_PRUNE_TEST_SKEW_RANK1") == "1" and os.environ.get("RANK") == "1":
        hf_prune.methods.magnitude.group_saliencies = _random_saliencies
        hf_prune.methods.ocsp.group_saliencies = _random_saliencies
    runpy.run_path(str(SCRIPT), run_name="__main__")  # after the patches above, as the launcher runs it


if __name__ == "__main__":
    main()
