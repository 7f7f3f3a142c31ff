"""Benchmark LAASP's candidate search against a reference-style search, and a full run against dense.

Two parts (``--mode step``, ``--mode run`` or ``--mode all``):

* step: one search step on ``cifar_resnet56`` (random init, BatchNorm statistics of real images):
  the same candidates scored by LAASP as implemented (output masks, replayed dense prefix,
  shared evaluations, optional screening), by masks alone, and reference-style (for each
  candidate: ``copy.deepcopy`` the model, trace a ``StructureGraph``, prune physically, forward
  the subset). Masks alone and the reference are timed on a sample of candidates and
  extrapolated to all of them.
* run: ``cifar_resnet20`` on ``builtin:mnist5k``, dense (``pruning_method=none``) and LAASP to
  ``--target`` with the same epochs and seed, through ``scripts/prune_image_classification.py``:
  top-1, MACs, params and wall time.

Results go to ``--output`` (JSON) and a table is printed::

    python benchmarks/benchmark_laasp.py --mode all --output outputs/benchmark_laasp.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import runpy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback, TrainerState

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune import PruningArguments, PruningTrainer
from hf_prune.data import collate_image_batch, load_image_classification_data, with_transforms
from hf_prune.methods import LAASPPruning, PruningContext
from hf_prune.methods.subset_loss import MaskedCandidate, SubsetLoss, build_loss_subset
from hf_prune.methods.laasp import Candidate
from hf_prune.models import load_model
from hf_prune.structure import MacsModel, PrefixCache, StructureGraph, unit_output_masks

# A program, not a package: its main(argv) -> report is loaded by path.
EXAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"
run_example = runpy.run_path(str(EXAMPLE_SCRIPT))["main"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("step", "run", "all", "agreement"), default="all")
    parser.add_argument("--output", default="outputs/benchmark_laasp.json", help="JSON file for the results.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=0)
    step = parser.add_argument_group("step")
    step.add_argument("--model", default="cifar_resnet56")
    step.add_argument("--subset_size", type=int, default=512)
    step.add_argument("--reference_candidates", type=int, default=6,
                      help="Candidates (evenly spaced) timed reference-style and with masks alone; extrapolated.")
    run = parser.add_argument_group("run")
    run.add_argument("--epochs", type=float, default=4)
    run.add_argument("--target", type=float, default=0.5)
    run.add_argument("--max_train_samples", type=int, default=None)
    run.add_argument("--laasp_args", action="append",
                     help="Flags of one LAASP run, e.g. '--laasp_flops_step 0.02' (repeat for several runs; default: one "
                     "run at the defaults).")
    agreement = parser.add_argument_group("agreement")
    agreement.add_argument("--records", default="outputs/laasp_search_records.jsonl",
                           help="Per-step candidate losses of the recorded exhaustive search (reused when present).")
    agreement.add_argument("--record_batch_size", type=int, default=32, help="Images per recorded batch.")
    agreement.add_argument("--record_every", type=int, default=5, help="Record every this many search steps.")
    return parser


# ---------------------------------------------------------------------------------------------- one step
def step_setup(
    model_name: str, subset_size: int, seed: int, **laasp_settings: Any
) -> tuple[LAASPPruning, PruningContext, list[Candidate]]:
    """A LAASP method (default settings but ``laasp_settings``), its context and the candidates of the first
    search step on ``builtin:mnist5k``."""
    data = load_image_classification_data("builtin:mnist5k", seed=seed)
    loaded = load_model(model_name, num_labels=10)
    data = with_transforms(data, loaded.data_config, hflip=False)
    model = loaded.model
    _calibrate_batchnorm(model, [data.train[i]["pixel_values"] for i in range(64)])
    args = PruningArguments(
        output_dir=tempfile.mkdtemp(), pruning_method="laasp", use_cpu=True, report_to=[], seed=seed,
        laasp_subset_size=subset_size, disable_tqdm=True, **laasp_settings,
    )
    example = data.train[0]["pixel_values"][None]
    graph = StructureGraph(model, example)
    macs = MacsModel(graph, example)
    context = PruningContext(
        model=model, graph=graph, macs=macs, dense_macs=macs.base_macs, args=args,
        state=TrainerState(max_steps=100, num_train_epochs=10, global_step=30), learning_rate=0.1,
        train_dataset=data.train, data_collator=collate_image_batch, log=lambda metrics: None,
    )
    method = LAASPPruning()
    method.dense_units = {g.name: g.num_units for g in graph.groups}
    method.step_sizes = method.dense_step_sizes(context)
    return method, context, method.candidates(context)


def benchmark_step(options: argparse.Namespace) -> dict[str, Any]:
    """Time one search step of each kind on the same candidates."""
    method, context, candidates = step_setup(options.model, options.subset_size, options.seed)
    model, graph, args = context.model, context.graph, context.args
    example = context.train_dataset[0]["pixel_values"][None]
    proposals = sum(len(c.criteria) for c in candidates)
    method.evaluate(context, candidates[:1])  # builds the subset: not part of a step's cost

    results = {"model": options.model, "subset_size": options.subset_size, "groups": len(graph.groups),
               "criteria_proposals": proposals, "distinct_candidates": len(candidates),
               "reference_candidates": 4 * sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())}
    started = time.perf_counter()
    losses, _ = method.evaluate(context, candidates)
    results["laasp"] = _timing(time.perf_counter() - started, len(candidates))
    args.laasp_screen_fraction, args.laasp_race = 0.0, 0.0
    started = time.perf_counter()
    exact, _ = method.evaluate(context, candidates)
    results["masks_prefix"] = _timing(time.perf_counter() - started, len(candidates))
    sample = candidates[:: max(1, len(candidates) // max(options.reference_candidates, 1))][: options.reference_candidates]
    groups = {g.name: g for g in graph.groups}
    masked = [MaskedCandidate(unit_output_masks(model, groups[c.group], c.removed)) for c in sample]
    plain = SubsetLoss(model, method._subset, prefix=None)
    started = time.perf_counter()
    plain.mean_losses([])  # the dense forward it runs per batch (for dense_loss) is not a candidate's cost
    dense_seconds = time.perf_counter() - started
    started = time.perf_counter()
    plain.mean_losses(masked)
    per_candidate = (time.perf_counter() - started - dense_seconds) / len(sample)
    results["masks_only"] = _timing(per_candidate * len(candidates), len(candidates))
    results["reference"] = _reference_timing(model, example, sample, method._subset, len(candidates))
    best = min(range(len(candidates)), key=lambda i: (losses[i], i))
    results["screening_kept_the_exact_best"] = best == min(range(len(candidates)), key=lambda i: (exact[i], i))
    return results


def _calibrate_batchnorm(model: torch.nn.Module, images: list[torch.Tensor]) -> None:
    """Random weights, but BatchNorm statistics of real activations (else the losses are meaningless)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.stack(images))
    model.eval()


def _reference_timing(model, example, picked, subset, step_candidates: int) -> dict[str, float]:
    """Reference-style evaluation of some candidates (copy, trace, prune, forward), extrapolated to a step."""
    started = time.perf_counter()
    for candidate in picked:
        pruned = copy.deepcopy(model)
        graph = StructureGraph(pruned, example)
        units = next(g.num_units for g in graph.groups if g.name == candidate.group)
        graph.apply({candidate.group: [u for u in range(units) if u not in candidate.removed]})
        with torch.no_grad():
            for batch in subset:
                F.cross_entropy(pruned(batch["pixel_values"]).float(), batch["labels"], reduction="sum")
    per_candidate = (time.perf_counter() - started) / len(picked)
    return {"timed_candidates": len(picked), "seconds_per_candidate": per_candidate,
            "seconds_per_step": per_candidate * step_candidates}


def _timing(seconds: float, count: int) -> dict[str, float]:
    return {"seconds_per_step": seconds, "seconds_per_candidate": seconds / count}


# ---------------------------------------------------------------------------------------------- full runs
def benchmark_run(options: argparse.Namespace) -> dict[str, Any]:
    """A dense run and one LAASP run per ``--laasp_args`` of the demo script, same epochs and seed, in this
    process: their wall and CPU time ratios to dense are measured under the same conditions."""
    common = ["--num_train_epochs", str(options.epochs), "--seed", str(options.seed), "--use_cpu",
              "--disable_tqdm", "true", "--eval_around_prune", "false", "--logging_steps", "1000",
              "--card_latency", "false"]
    if options.max_train_samples:
        common += ["--max_train_samples", str(options.max_train_samples)]
    runs = [("dense", ["--pruning_method", "none"])] + [
        (f"laasp {flags}".strip(), ["--pruning_method", "laasp", "--target_flops_reduction", str(options.target),
                                    *flags.split()])
        for flags in options.laasp_args or [""]
    ]
    results = {}
    for name, extra in runs:
        output_dir = tempfile.mkdtemp(prefix="laasp-bench-")
        started, cpu_started = time.perf_counter(), time.process_time()
        report = run_example(["--output_dir", output_dir, *common, *extra])
        results[name] = {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
                         "train_seconds": report["train_runtime"], "top1": report["pruned"]["top1"],
                         "macs": report["pruned"]["macs"], "params": report["pruned"]["params"],
                         "macs_reduction": report["macs_reduction"], "prune_events": len(report["pruning_events"])}
    for row in results.values():
        row["wall_time_ratio"] = row["seconds"] / results["dense"]["seconds"]
        row["cpu_time_ratio"] = row["cpu_seconds"] / results["dense"]["cpu_seconds"]
    return results


# ---------------------------------------------------------------------------------------------- agreement
class RecordingLAASP(LAASPPruning):
    """LAASP as configured, but every ``every``-th step is the exhaustive search on its subset A, recording
    every candidate's loss sum per batch on A and on a disjoint subset B of the same size (the next
    images of the same stratified draw) to ``records_path`` (JSON lines)."""

    def __init__(self, records_path: str, every: int) -> None:
        super().__init__()
        self.records_path = records_path
        self.every = every
        self._pool: list[dict[str, torch.Tensor]] | None = None

    def evaluate(
        self, context: PruningContext, candidates: list[Candidate], screen: bool = True
    ) -> tuple[list[float], float]:
        if len(self.history) % self.every:
            return super().evaluate(context, candidates, screen)
        args = context.args
        if self._pool is None:
            device = next(context.model.parameters()).device
            self._pool = build_loss_subset(context.train_dataset, context.data_collator, 2 * args.laasp_subset_size,
                                           args.laasp_batch_size, args.seed, device)
            self._subset = self._pool[: len(self._pool) // 2]  # = the subset LAASP draws itself
        groups = {g.name: g for g in context.graph.groups}
        masked = [MaskedCandidate(unit_output_masks(context.model, groups[c.group], c.removed)) for c in candidates]
        prefix = PrefixCache(context.model, self._pool[0]["pixel_values"][:1])
        sums, dense, counts = SubsetLoss(context.model, self._pool, prefix).batch_sums(masked, self._pool)
        record = {"step": len(self.history) + 1,
                  "candidates": [[c.group, list(c.criteria), list(c.removed)] for c in candidates],
                  "sums": sums.tolist(), "dense": dense.tolist(), "counts": counts.tolist(),
                  }
        with open(self.records_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        half = len(self._pool) // 2
        images = counts[:half].sum()
        return (sums[:, :half].sum(1) / images).tolist(), float(dense[:half].sum() / images)


class _StopAfterSearch(TrainerCallback):
    def __init__(self, method: LAASPPruning) -> None:
        self.method = method

    def on_step_end(self, args, state, control, **kwargs):
        if self.method.phase == "done":
            control.should_training_stop = True


def record_search(options: argparse.Namespace, records_path: str) -> None:
    """LAASP at its defaults in a demo-recipe run (SGD 0.1, cosine, batch 128) on ``builtin:mnist5k``, with
    every ``--record_every``-th step exhaustive and recorded."""
    torch.manual_seed(options.seed)
    data = load_image_classification_data("builtin:mnist5k", seed=options.seed, max_train_samples=options.max_train_samples)
    loaded = load_model("cifar_resnet20", num_labels=10)
    data = with_transforms(data, loaded.data_config, hflip=False)
    args = PruningArguments(
        output_dir=tempfile.mkdtemp(), pruning_method="laasp", use_cpu=True, report_to=[], seed=options.seed,
        num_train_epochs=options.epochs, per_device_train_batch_size=128, learning_rate=0.1, optim="sgd",
        optim_args="momentum=0.9,nesterov=true", weight_decay=5e-4, lr_scheduler_type="cosine", save_strategy="no",
        eval_around_prune=False, disable_tqdm=True, logging_steps=1000, target_flops_reduction=options.target,
        laasp_subset_size=options.subset_size, laasp_batch_size=options.record_batch_size,
    )
    method = RecordingLAASP(records_path, options.record_every)
    trainer = PruningTrainer(model=loaded.model, args=args, train_dataset=data.train, data_collator=collate_image_batch,
                             pruning_method=method, callbacks=[_StopAfterSearch(method)])
    trainer.train()


SEARCH_SETTINGS = [(fraction, keep, race) for fraction in (0.125, 0.0625) for keep in (8, 4) for race in (0.0, 1.0, 2.0, 3.0)]


def agreement(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How often cheaper searches pick the exhaustive search's candidate, replayed on the recorded losses.

    Each setting (``laasp_screen_fraction``, ``laasp_screen_keep``, ``laasp_race``) runs
    ``SubsetLoss.mean_losses`` itself on subset A (the first half of each record's batches);
    "exhaustive, subset B" is the exhaustive search on the other half: how often two equally good
    subsets agree, the noise floor. Cost counts image forwards (candidates' and the dense model's)
    against the exhaustive search's; regret is the A-loss of the pick above the exhaustive pick's.
    """
    rows = []
    for name, settings, half in [("exhaustive, subset B (noise floor)", (), 1)] + [
        (f"screen {fraction:g}, keep {keep}, race {race:g}", (fraction, keep, race), 0)
        for fraction, keep, race in SEARCH_SETTINGS
    ]:
        agree, regret, cost, full_cost = 0, 0.0, 0.0, 0.0
        for record in records:
            reference, rule = _ReplayedLoss(record, 0), _ReplayedLoss(record, half)
            exhaustive = reference.mean_losses(list(range(reference.num_candidates)))
            full_cost += reference.images
            losses = rule.mean_losses(list(range(rule.num_candidates)), *settings)
            best, pick = _argmin(exhaustive), _argmin(losses)
            agree += pick == best
            regret += exhaustive[pick] - exhaustive[best]
            cost += rule.images
        rows.append({"rule": name, "steps": len(records), "agreement": agree / len(records),
                     "mean_regret": regret / len(records), "cost_vs_exhaustive": cost / full_cost})
    return rows


class _ReplayedLoss(SubsetLoss):
    """``SubsetLoss`` over one half of a record's batches, reading the recorded sums instead of running the
    model; candidates and batches are indices. Counts the image forwards it would have run."""

    def __init__(self, record: dict[str, Any], half: int) -> None:
        sums = torch.tensor(record["sums"], dtype=torch.float64)
        width = sums.shape[1] // 2
        columns = slice(half * width, (half + 1) * width)
        self.sums = sums[:, columns]
        self.dense = torch.tensor(record["dense"], dtype=torch.float64)[columns]
        self.counts = torch.tensor(record["counts"], dtype=torch.float64)[columns]
        self.num_candidates = len(sums)
        self.images = 0.0
        super().__init__(model=None, batches=list(range(width)), prefix=None)

    def batch_sums(self, candidates, batches):
        self.images += float(self.counts[batches].sum()) * (len(candidates) + 1)
        return self.sums[candidates][:, batches], self.dense[batches], self.counts[batches]


def _argmin(values: list[float]) -> int:
    return min(range(len(values)), key=lambda i: (values[i], i))


# ---------------------------------------------------------------------------------------------- report
def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = []
    step = results.get("step")
    if step:
        lines += [
            f"one search step on {step['model']} ({step['groups']} groups; {step['criteria_proposals']} group x "
            f"criterion proposals -> {step['distinct_candidates']} distinct candidates; the reference evaluates "
            f"{step['reference_candidates']}), subset {step['subset_size']} images",
            f"{'evaluation':44} {'s/candidate':>12} {'s/step':>9} {'speed-up':>9}",
        ]
        reference = step["reference"]["seconds_per_step"]
        rows = [("reference-style (copy+trace+prune+forward)", step["reference"]),
                ("masks only", step["masks_only"]), ("masks + replayed prefix", step["masks_prefix"]),
                ("masks + prefix + screening + race (default)", step["laasp"])]
        for label, row in rows:
            lines.append(f"{label:44} {row['seconds_per_candidate']:12.4f} {row['seconds_per_step']:9.2f} "
                         f"{reference / row['seconds_per_step']:8.1f}x")
        per_conv = step["reference"]["seconds_per_candidate"] * step["reference_candidates"]
        lines.append(f"reference step with its own {step['reference_candidates']} per-conv candidates: ~{per_conv:.1f} s "
                     f"({per_conv / step['laasp']['seconds_per_step']:.1f}x the default step); "
                     f"screening kept the exact best: {step['screening_kept_the_exact_best']}")
    run = results.get("run")
    if run:
        lines += ["", f"{'run (builtin:mnist5k, cifar_resnet20)':60} {'top-1 %':>8} {'MACs red.':>9} {'steps':>5} "
                  f"{'train s':>8} {'wall s':>8} {'CPU s':>8} {'wall/dense':>10} {'CPU/dense':>9}"]
        for name, r in run.items():
            lines.append(f"{name:60} {100 * r['top1']:8.2f} {r['macs_reduction']:9.1%} {r['prune_events']:5d} "
                         f"{r['train_seconds']:8.1f} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} "
                         f"{r['wall_time_ratio']:9.2f}x {r['cpu_time_ratio']:8.2f}x")
    rows = results.get("agreement")
    if rows:
        lines += ["", f"agreement with the exhaustive search on {rows[0]['steps']} recorded steps",
                  f"{'rule':44} {'same pick':>9} {'mean regret':>12} {'cost':>6}"]
        lines += [f"{r['rule']:44} {r['agreement']:9.0%} {r['mean_regret']:12.5f} {r['cost_vs_exhaustive']:6.2f}"
                  for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = make_parser().parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if options.mode in ("step", "all"):
        results["step"] = benchmark_step(options)
    if options.mode in ("run", "all"):
        results["run"] = benchmark_run(options)
    if options.mode == "agreement":
        if not os.path.exists(options.records):
            os.makedirs(os.path.dirname(os.path.abspath(options.records)), exist_ok=True)
            record_search(options, options.records)
        with open(options.records) as f:
            results["agreement"] = agreement([json.loads(line) for line in f])
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    with open(options.output, "w") as f:
        json.dump(results, f, indent=2)
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
