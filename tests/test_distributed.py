"""Two real gloo processes on CPU (torchrun and accelerate launch): identical pruning on every rank.

Each launch runs ``tests/_distributed_worker.py`` (the example script plus per-rank records of
parameter digests, plans and DDP's gradient-sync flag). One launch per scenario, several checks
per launch, 256 training images: the module takes about a minute on two unshared cores.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.state import AcceleratorState

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import PruningArguments
from hf_prune.methods.subset_loss import MaskedCandidate, SubsetLoss
from hf_prune.trainer.rewiring import full_precision
from hf_prune.structure import PrefixCache, StructureGraph, unit_output_masks

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_distributed_worker.py"
CONFIGS = ROOT / "scripts" / "accelerate_configs"
COMMON = [
    "--max_train_samples", "256", "--max_eval_samples", "64", "--use_cpu", "--disable_tqdm", "true",
    "--eval_around_prune", "false", "--eval_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    return ["torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port())]


def _accelerate(*flags: str) -> list[str]:
    return ["accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_multi_process.yaml"),
            "--main_process_port", str(_free_port()), *flags]


def _launch(output_dir: Path, launcher: list[str], args: list[str], **env: str) -> tuple[list[dict], dict]:
    """Run the worker on 2 processes; return each rank's record and rank 0's pruning report."""
    environment = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", *launcher, str(WORKER), "--output_dir", str(output_dir), *COMMON, *args]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    ranks = [json.loads((output_dir / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, json.loads((output_dir / "pruning_report.json").read_text())


def _assert_identical_ranks(ranks: list[dict]) -> None:
    """Two processes ran, applied the same plans to identical weights and stayed identical to the end."""
    first, second = ranks
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert first["prunes"] and first["prunes"] == second["prunes"]  # plan digests and pre-re-wrap weights
    assert first["events"] == second["events"]  # architecture after each prune
    assert first["steps"] == second["steps"]  # weights after every optimizer step
    assert first["final"] == second["final"]


def _assert_trained_after_last_prune(record: dict, min_steps: int) -> None:
    last_prune = record["prunes"][-1]["step"]
    after = {s["step"]: s["params"] for s in record["steps"] if s["step"] > last_prune}
    assert len(after) >= min_steps and len(set(after.values())) == len(after)  # every step changed the weights


@pytest.fixture(scope="module")
def magnitude_run(tmp_path_factory):
    """torchrun, gradient accumulation 2: 256 images / (16 x 2 ranks x 2) = 4 optimizer steps per epoch."""
    return _launch(tmp_path_factory.mktemp("magnitude"), _torchrun(), [
        "--pruning_method", "magnitude", "--num_train_epochs", "3", "--per_device_train_batch_size", "16",
        "--gradient_accumulation_steps", "2", "--prune_epoch", "1",
    ])


@pytest.fixture(scope="module")
def ocsp_run(tmp_path_factory):
    """torchrun, rank 1 ranks units by random saliencies: its own decisions differ from rank 0's."""
    return _launch(tmp_path_factory.mktemp("ocsp"), _torchrun(), [
        "--pruning_method", "ocsp", "--num_train_epochs", "4", "--per_device_train_batch_size", "32",
    ], HF_PRUNE_TEST_SKEW_RANK1="1")


@pytest.fixture(scope="module")
def laasp_bf16_run(tmp_path_factory):
    """accelerate launch with scripts/accelerate_configs/cpu_multi_process.yaml and bf16 autocast."""
    return _launch(tmp_path_factory.mktemp("laasp"), _accelerate("--mixed_precision", "bf16"), [
        "--pruning_method", "laasp", "--bf16", "--num_train_epochs", "3", "--per_device_train_batch_size", "32",
        "--target_flops_reduction", "0.3", "--laasp_flops_step", "0.1", "--laasp_prune_start", "1",
        "--laasp_subset_size", "64", "--laasp_batch_size", "32", "--laasp_recovery_epochs", "0.5",
        "--laasp_recover_flops", "0.15",
    ])


def test_magnitude_prunes_at_an_optimizer_step_with_identical_ranks(magnitude_run):
    ranks, report = magnitude_run
    _assert_identical_ranks(ranks)
    record = ranks[0]
    (prune,) = record["prunes"]
    assert prune["step"] == 4 and [e["step"] for e in record["events"]] == [4]  # prune_epoch 1 = optimizer step 4
    assert 0.5 <= report["macs_reduction"] < 0.51
    # on_step_end (where plans are applied) ran once per optimizer step, never between micro-batches.
    assert [s["step"] for s in record["steps"] if s["hook"] == "on_step_end"] == list(range(1, 13))
    assert len(record["micro_batches"]) == 2 * 12
    _assert_trained_after_last_prune(record, min_steps=8)


def test_gradient_accumulation_syncs_only_the_last_micro_batch_after_a_prune(magnitude_run):
    ranks, _ = magnitude_run
    for record in ranks:
        micro = record["micro_batches"]
        assert any(m["step"] > 4 for m in micro)  # micro-batches after the re-wrap are covered
        # DDP all-reduces exactly when accelerate ends an accumulation window, before and after the prune.
        assert all(m["live"] and m["ddp_sync"] is m["sync_gradients"] for m in micro)
        assert [m["sync_gradients"] for m in micro] == [False, True] * 12


def test_ocsp_ranks_follow_rank_0_even_when_rank_1_decides_otherwise(ocsp_run):
    ranks, report = ocsp_run
    _assert_identical_ranks(ranks)
    proposed = [r["proposed"] for r in ranks]
    (applied,) = {p["keep"] for p in ranks[1]["prunes"]}
    (prune_step,) = {p["step"] for p in ranks[1]["prunes"]}
    rank1_then = [p["keep"] for p in proposed[1] if p["step"] == prune_step]
    # Rank 1 decided otherwise at that step (another plan, or not yet: its skewed scores miss the norm-ratio
    # rule) and was overruled: it applied rank 0's plan.
    assert proposed[0][-1]["keep"] == applied and rank1_then != [applied]
    state = report["method_state"]
    assert state["phase"] == "pruned" and state["reg"] > 0  # the shrink ran on both ranks, in step
    assert 0.5 <= report["macs_reduction"] < 0.51
    _assert_trained_after_last_prune(ranks[0], min_steps=5)


def test_laasp_bf16_under_accelerate_launch_searches_identically(laasp_bf16_run):
    ranks, report = laasp_bf16_run
    _assert_identical_ranks(ranks)
    assert {r["mixed_precision"] for r in ranks} == {"bf16"}
    history = report["method_state"]["history"]
    assert len(ranks[0]["prunes"]) == len(history) >= 3 and report["macs_reduction"] >= 0.3
    assert any(step["recovery_steps"] > 0 for step in history)  # recovery training ran under DDP too
    losses = ranks[0]["losses"]
    assert all(math.isfinite(x) for x in losses) and sum(losses[-3:]) < sum(losses[:3])
    assert report["reload_max_abs_diff"] <= 1e-5  # saved slim weights reload (compared in fp32)
    _assert_trained_after_last_prune(ranks[0], min_steps=5)


def test_a_stale_ddp_wrapper_is_caught_by_the_same_check(tmp_path):
    """Without the re-wrap the old DDP wrapper never all-reduces the new parameters: ranks drift apart."""
    ranks, _ = _launch(tmp_path, _torchrun(), [
        "--pruning_method", "magnitude", "--num_train_epochs", "2", "--per_device_train_batch_size", "32",
        "--prune_epoch", "1",
    ], HF_PRUNE_TEST_STALE_WRAPPER="1")
    with pytest.raises(AssertionError):
        _assert_identical_ranks(ranks)
    first, second = ({s["step"]: s["params"] for s in r["steps"]} for r in ranks)
    prune_step = ranks[0]["prunes"][0]["step"]
    assert ranks[0]["prunes"] == ranks[1]["prunes"]  # the prune itself was identical...
    assert all(first[s] == second[s] for s in first if s <= prune_step)
    assert all(first[s] != second[s] for s in first if s > prune_step)  # ...every step after it diverged
    assert all(ranks[0]["final"][n] != ranks[1]["final"][n] for n in ranks[0]["final"])


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)  # the Trainer tests leave one without bf16
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_candidate_losses_are_fp32_under_bf16_autocast(fresh_accelerate_state):
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20", num_classes=10).eval()
    reference = copy.deepcopy(model)
    Accelerator(mixed_precision="bf16", cpu=True).prepare_model(model)  # wraps model.forward in bf16 autocast
    images, labels = torch.randn(32, 3, 32, 32), torch.arange(32) % 10
    with torch.no_grad():
        assert not torch.equal(model(images), reference(images))  # plain forwards do run in bf16

    def losses(net, autocast: bool):
        group = StructureGraph(net, images[:1]).groups[4]
        candidates = [MaskedCandidate(unit_output_masks(net, group, units)) for units in ([0, 1], [2, 3, 5])]
        evaluator = SubsetLoss(net, [{"pixel_values": images, "labels": labels}], PrefixCache(net, images[:1]))
        # The trainer runs every method hook inside full_precision (PruningTrainer._run_hook).
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), full_precision(net):
            return evaluator.mean_losses(candidates), evaluator.dense_loss

    # Under accelerate's wrapper and an outer autocast: bit-identical to the model that never saw autocast.
    assert losses(model, autocast=True) == losses(reference, autocast=False)
    with torch.no_grad():
        assert not torch.equal(model(images), reference(images))  # the bf16 wrapper is back afterwards


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs a CUDA GPU")
def test_fp16_with_grad_scaler_trains_through_a_prune(tmp_path, fresh_accelerate_state):
    from test_trainer import _trainer

    trainer = _trainer(tmp_path, pruning_method="magnitude", fp16=True, use_cpu=False)
    trainer.train()
    assert trainer.accelerator.scaler is not None and trainer.optimizer.scaler is trainer.accelerator.scaler
    (event,) = trainer.pruning_events
    assert event["macs_reduction"] >= 0.5 and trainer.state.global_step == trainer.state.max_steps
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert all(math.isfinite(x) for x in losses) and sum(losses[-3:]) < sum(losses[:3])


@pytest.mark.skipif(torch.accelerator.is_available(), reason="GPU machines run multi-process without --use_cpu")
def test_multi_process_cpu_launch_without_use_cpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="pass --use_cpu"):
        PruningArguments(output_dir=str(tmp_path), report_to=[])


@pytest.mark.parametrize("name, distributed_type, processes, cpu", [
    ("single_gpu", "NO", 1, False), ("multi_gpu", "MULTI_GPU", 2, False), ("cpu_multi_process", "MULTI_GPU", 2, True),
])
def test_accelerate_configs(name, distributed_type, processes, cpu):
    # MULTI_GPU (not MULTI_CPU) for the CPU config: accelerate launch starts a single process for MULTI_CPU.
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert (config.distributed_type, config.num_processes, config.use_cpu) == (distributed_type, processes, cpu)
    assert config.mixed_precision in ("no", "bf16")
