"""Methods side by side: every model x method x target x seed trained by the same harness.

Each run goes through ``scripts/prune_image_classification.py`` and appends one JSON row to
``<output_dir>/results.jsonl`` (runs already there are skipped, so an interrupted benchmark resumes).
Then ``results.md`` (mean ± std over seeds, Welch's t-test of the paper methods against the
others) and one ``accuracy_vs_macs_<model>.png`` per model are written::

    python benchmarks/benchmark.py --quick         # CPU, about 10 minutes
    python benchmarks/benchmark.py                 # the full grid (hours on CPU)
    python benchmarks/benchmark.py --report_only   # reports from results.jsonl (e.g. merged shards)
"""

from __future__ import annotations

import json
import os
import runpy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import ttest_ind
from transformers import HfArgumentParser

from hf_prune import AutoPrunedModel
from hf_prune.hub.model_dir import write_text_atomic
from hf_prune.methods import list_methods, method_class
from hf_prune.latency import measure_latency_ms
from hf_prune.plots import plot_scatter

# A program, not a package: its main(argv) -> report is loaded by path.
EXAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prune_image_classification.py"
run_example = runpy.run_path(str(EXAMPLE_SCRIPT))["main"]

KEY_FIELDS = ("model", "method", "round_to", "target", "seed")
UNROUNDED = "1"  # rows written before the round_to axis kept arbitrary widths
PAPER_METHODS = ("ocsp", "laasp")
METHODS = list_methods()  # every registered method; the dense one is the reference row
DENSE = next(name for name in METHODS if method_class(name).is_dense)
BASELINES = tuple(name for name in METHODS if name not in PAPER_METHODS)
LATENCIES = {"latency_ms_bs64": "speedup_bs64", "cuda_latency_ms_bs64": "cuda_speedup_bs64"}
SUMMARIZED = ("top1_before_prune", "top1_after_prune", "macs_reduction", "pruned_epoch", "norm_ratio_at_prune",
              "laasp_agreement", "train_wall_s", "run_cpu_s")
QUICK = {"models": ["cifar_resnet20"], "methods": METHODS,
         "targets": [0.5, 0.8], "seeds": [0], "epochs": 3.0, "max_train_samples": 2000}


@dataclass
class BenchmarkArguments:
    output_dir: str = field(default="outputs/benchmark", metadata={"help": "Where results.jsonl/.md/.png go."})
    quick: bool = field(default=False, metadata={"help": f"The small CPU grid: {QUICK}."})
    models: list[str] = field(
        default_factory=lambda: ["cifar_resnet20", "cifar_resnet56", "resnet18"],
        metadata={"help": "timm names (or Hub ids); every model gets image_size-pixel inputs."},
    )
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    targets: list[float] = field(default_factory=lambda: [0.5, 0.8, 0.9])
    round_to: list[str] = field(
        default_factory=lambda: [UNROUNDED, "auto"],
        metadata={"help": "round_to of every pruning run (a row per value); the dense model runs once."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: float = field(default=12.0, metadata={"help": "Training epochs of every run."})
    image_size: int = field(default=32, metadata={"help": "Input resolution of every model (timm resnet18 at 32 px)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate builtin:mnist5k's 4000 training images."})
    latency_threads: int = field(default=1, metadata={"help": "Threads for the latency measurements."})
    extra_args: str = field(default="", metadata={"help": "Flags appended to every run, e.g. '--bf16'."})
    report_only: bool = field(
        default=False, metadata={"help": "Only write results.md and the plot from results.jsonl (e.g. merged shards)."}
    )

    def __post_init__(self) -> None:
        if self.quick:
            for name, value in QUICK.items():
                setattr(self, name, value)


def run_grid(options: BenchmarkArguments, run: Callable[[dict[str, Any], BenchmarkArguments], dict[str, Any]]) -> list[dict]:
    """Run every missing (model, method, round_to, target, seed) and return all rows of results.jsonl."""
    results = Path(options.output_dir) / "results.jsonl"
    rows = load_rows(results)
    done = {tuple(_key(row).values()) for row in rows}
    for model in options.models:
        for method in sorted(options.methods, key=lambda name: name != DENSE):  # dense first: the cards' reference
            dense = method == DENSE
            for round_to in [UNROUNDED] if dense else options.round_to:
                for target in [0.0] if dense else options.targets:
                    for seed in options.seeds:
                        key = {"model": model, "method": method, "round_to": round_to, "target": target, "seed": seed}
                        if tuple(key.values()) in done:
                            continue
                        row = {**key, **run(key, options)}
                        results.parent.mkdir(parents=True, exist_ok=True)
                        with results.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        rows.append(row)
    return rows


def _key(row: dict[str, Any]) -> dict[str, Any]:
    """The row's grid key; rows from before the round_to axis were unrounded."""
    return {name: row.get(name, UNROUNDED) if name == "round_to" else row[name] for name in KEY_FIELDS}


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def train_once(key: dict[str, Any], options: BenchmarkArguments) -> dict[str, Any]:
    """One training run through the example script; the measurements of one results row."""
    output_dir = _run_dir(options, key)
    argv = ["--output_dir", str(output_dir), "--model_name_or_path", key["model"], "--seed", str(key["seed"]),
            "--num_train_epochs", str(options.epochs), "--image_size", str(options.image_size),
            "--pruning_method", key["method"], "--round_to", key["round_to"], "--use_cpu",
            "--eval_around_prune", "--card_latency", "false", "--disable_tqdm", "true", "--logging_steps", "1000",
            *options.extra_args.split()]
    if key["method"] != DENSE:
        # High targets need room: allow a group to lose up to 95 % of its units.
        argv += ["--target_flops_reduction", str(key["target"]), "--layer_prune_limit", str(max(0.7, key["target"] + 0.05))]
    if options.max_train_samples:
        argv += ["--max_train_samples", str(options.max_train_samples)]
    dense_metrics = _run_dir(options, {**key, "method": DENSE, "round_to": UNROUNDED, "target": 0.0}) / "eval_results.json"
    if key["method"] != DENSE and dense_metrics.is_file():
        argv += ["--dense_reference", str(dense_metrics)]
    started, cpu_started = time.perf_counter(), time.process_time()
    report = run_example(argv)
    run_cpu_s = time.process_time() - cpu_started
    events = report["pruning_events"]
    # LAASP prunes in many small steps: its last step is the one that reaches the target.
    before = (events[-1].get("metrics_before") or {}) if events else {}
    after = (events[-1].get("metrics_after") or {}) if events else {}
    prune_eval_s = sum(event["eval_seconds"] for event in events)
    prune_eval_cpu_s = sum(event.get("eval_cpu_seconds", 0.0) for event in events)
    return {
        "top1": report["pruned"]["top1"], "top5": report["pruned"]["top5"],
        "top1_before_prune": before.get("eval_before_prune_top1"),
        "top1_after_prune": after.get("eval_after_prune_top1"),
        "macs": report["pruned"]["macs"], "params": report["pruned"]["params"],
        "dense_macs": report["dense"]["macs"], "macs_reduction": report["macs_reduction"],
        # The evaluations around prune events are the harness's, not the method's (LAASP has one event per step).
        "train_wall_s": report["train_runtime"] - prune_eval_s, "prune_eval_s": prune_eval_s,
        # CPU process time of the whole run (setup, training, final evaluation, saving) less those evaluations
        # and LAASP's audit (the exhaustive search run beside the lazy one, --laasp_audit): comparable between
        # runs on a shared machine, where wall time is not.
        "run_cpu_s": run_cpu_s - prune_eval_cpu_s - _audit_cpu_seconds(report["method_state"]),
        "run_wall_s": time.perf_counter() - started,
        "search_wall_s": _search_seconds(key["method"], report["method_state"]),
        "pruned_epoch": events[-1]["epoch"] if events else None,
        **_method_figures(key["method"], report["method_state"]),
        **_latencies(output_dir, options.latency_threads),
    }


def _search_seconds(method: str, state: dict[str, Any]) -> float | None:
    if method == "ocsp":
        return state.get("search_seconds")
    if method == "laasp":
        return sum(step.get("seconds", 0.0) for step in state.get("history", []))
    return None


def _audit_cpu_seconds(state: dict[str, Any]) -> float:
    return sum(step.get("audit_cpu_seconds", 0.0) for step in state.get("history", []))


def _method_figures(method: str, state: dict[str, Any]) -> dict[str, Any]:
    """What a method records about its own decisions: OCSP's norm ratio at the prune, LAASP's agreement."""
    if method == "ocsp" and state.get("norm_ratio"):
        return {"norm_ratio_at_prune": state["norm_ratio"][-1][1]}
    if method == "laasp":
        audited = [step["agrees"] for step in state.get("history", []) if step.get("agrees") is not None]
        return {"laasp_steps": len(state.get("history", [])),
                "laasp_agreement": sum(audited) / len(audited) if audited else None}
    return {}


def _run_dir(options: BenchmarkArguments, key: dict[str, Any]) -> Path:
    return Path(options.output_dir) / "runs" / "-".join(str(v) for v in key.values())


def _latencies(output_dir: Path, threads: int) -> dict[str, float]:
    """Latency of the saved (slim) model, reloaded the way users load it: CPU, and CUDA when there is one."""
    model = AutoPrunedModel.from_pretrained(output_dir)
    config = json.loads((output_dir / "config.json").read_text())
    input_size = tuple(config["hf_prune"]["input_size"])
    latencies = {f"latency_ms_bs{b}": measure_latency_ms(model, input_size, b, num_threads=threads) for b in (1, 64)}
    if torch.cuda.is_available():
        model.cuda()
        latencies |= {f"cuda_latency_ms_bs{b}": measure_latency_ms(model, input_size, b) for b in (1, 64)}
    return latencies


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std (ddof 0) over seeds per (model, method, round_to, target); latency speed-up vs the dense rows."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = _key(row)
        groups.setdefault((key["model"], key["method"], key["round_to"], key["target"]), []).append(row)
    summary = []
    for (model, method, round_to, target), group in sorted(groups.items()):
        entry = {"model": model, "method": method, "round_to": round_to, "target": target, "seeds": len(group)}
        for name in ("top1", *SUMMARIZED, *LATENCIES):
            values = [r[name] for r in group if r.get(name) is not None]
            entry[name] = (float(np.mean(values)), float(np.std(values))) if values else None
        entry["macs_ratio"] = 1 / (1 - entry["macs_reduction"][0]) if entry["macs_reduction"] else None
        summary.append(entry)
    dense = {e["model"]: e for e in summary if e["method"] == DENSE}
    for entry in summary:
        dense_cpu = dense.get(entry["model"], {}).get("run_cpu_s")
        entry["cpu_ratio"] = entry["run_cpu_s"][0] / dense_cpu[0] if dense_cpu and entry["run_cpu_s"] else None
        for latency, speedup in LATENCIES.items():
            reference = dense.get(entry["model"], {}).get(latency)
            entry[speedup] = reference[0] / entry[latency][0] if reference and entry[latency] else None
    return summary


def markdown_table(summary: list[dict]) -> str:
    def cell(value: tuple[float, float] | None, scale: float = 1.0, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value[0] * scale:.{digits}f} ± {value[1] * scale:.{digits}f}"

    def speedup(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    lines = ["| model | method | round_to | target | seeds | top-1 % | top-1 right before / after the (last) prune % | "
             "MACs reduction % | prune epoch | norm ratio at the prune | LAASP agreement | train s (wall) | "
             "CPU s | CPU vs dense | CPU bs64 speed-up | CUDA bs64 speed-up | MACs ratio |", "|---" * 17 + "|"]
    for e in summary:
        lines.append(f"| {e['model']} | {e['method']} | {e['round_to']} | {e['target']:.0%} | {e['seeds']} | "
                     f"{cell(e['top1'], 100)} | "
                     f"{cell(e['top1_before_prune'], 100)} / {cell(e['top1_after_prune'], 100)} | "
                     f"{cell(e['macs_reduction'], 100, 1)} | {cell(e['pruned_epoch'], 1, 2)} | "
                     f"{cell(e['norm_ratio_at_prune'], 1, 3)} | {cell(e['laasp_agreement'], 100, 0)} | "
                     f"{cell(e['train_wall_s'], 1, 1)} | {cell(e['run_cpu_s'], 1, 1)} | {speedup(e['cpu_ratio'])} | "
                     f"{speedup(e['speedup_bs64'])} | {speedup(e['cuda_speedup_bs64'])} | {speedup(e['macs_ratio'])} |")
    return "\n".join(lines)


def separation(rows: list[dict]) -> list[dict]:
    """Each paper method against dense and each baseline at the same model, round_to and target.

    ``delta`` is the difference of mean top-1 (points); ``p_value`` is Welch's t-test over seeds
    (None with fewer than two seeds a side). A difference is beyond seed noise when p < 0.05.
    """
    top1: dict[tuple, list[float]] = {}
    for row in rows:
        key = _key(row)
        top1.setdefault((key["model"], key["method"], key["round_to"], key["target"]), []).append(100 * row["top1"])
    comparisons = []
    for (model, method, round_to, target), ours in sorted(top1.items()):
        if method not in PAPER_METHODS:
            continue
        for baseline in BASELINES:
            dense = baseline == DENSE
            theirs = top1.get((model, baseline, UNROUNDED if dense else round_to, 0.0 if dense else target))
            if not theirs:
                continue
            p_value = None
            if len(ours) > 1 and len(theirs) > 1 and np.std(ours) + np.std(theirs) > 0:
                p_value = float(ttest_ind(ours, theirs, equal_var=False).pvalue)
            comparisons.append({"model": model, "round_to": round_to, "target": target, "method": method, "baseline": baseline,
                                "delta": float(np.mean(ours) - np.mean(theirs)), "p_value": p_value})
    return comparisons


def separation_table(comparisons: list[dict]) -> str:
    lines = ["| model | round_to | target | method | vs | Δ top-1 (points) | p (Welch, seeds) | beyond seed noise |",
             "|---" * 8 + "|"]
    for c in comparisons:
        p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}"
        verdict = "n/a" if c["p_value"] is None else ("yes" if c["p_value"] < 0.05 else "no")
        lines.append(f"| {c['model']} | {c['round_to']} | {c['target']:.0%} | {c['method']} | {c['baseline']} | "
                     f"{c['delta']:+.2f} | {p} | {verdict} |")
    return "\n".join(lines)


def write_reports(rows: list[dict], output_dir: str) -> str:
    table = markdown_table(summarize(rows)) + "\n\n" + separation_table(separation(rows))
    report = Path(output_dir) / "results.md"
    write_text_atomic(report, table + "\n")  # a failed write leaves the previous report whole
    for model in sorted({row["model"] for row in rows}):
        points: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            if row["model"] == model:
                round_to = _key(row)["round_to"]
                label = row["method"] if round_to == UNROUNDED else f"{row['method']} (round_to {round_to})"
                points.setdefault(label, []).append((row["macs"] / 1e6, 100 * row["top1"]))
        plot_scatter(points, os.path.join(output_dir, f"accuracy_vs_macs_{model.replace('/', '_')}.png"),
                     xlabel="MACs (M)", ylabel="top-1 %", title=f"{model} on builtin:mnist5k: one point per run")
    return table


def main(argv: list[str] | None = None) -> str:
    (options,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    torch.manual_seed(0)
    rows = load_rows(Path(options.output_dir) / "results.jsonl") if options.report_only else run_grid(options, train_once)
    if not rows:
        raise SystemExit(f"no results in {options.output_dir}/results.jsonl to report")
    table = write_reports(rows, options.output_dir)
    print(table)
    return table


if __name__ == "__main__":
    main()
