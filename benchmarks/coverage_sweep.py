"""Does hf_prune prune my model? A coverage sweep over timm and transformers vision families.

Every architecture is built from scratch (no weights, no network) at a small input, pruned to
50 % MACs inside ``PruningTrainer`` (``magnitude``, a few steps on random data), saved, and
reloaded with ``hf_prune.AutoPrunedModel.from_pretrained``. One row per architecture records
the reached MACs reduction, the analytic MACs model's error against the counted MACs, the
largest logit difference after the reload, the forward latency ratio (slim / dense; noisy on a
shared CPU) and the error if any. Each architecture runs in its own forked process with a
timeout, so one hang or crash does not stop the sweep.

    HF_HUB_OFFLINE=1 python benchmarks/coverage_sweep.py            # the full sweep
    python benchmarks/coverage_sweep.py --only resnext26ts,hf_swin  # a few rows

Writes ``benchmarks/results/coverage.jsonl`` and ``coverage.md`` (atomically, temp file then
rename); ``--readme`` also replaces the README's coverage table.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_START, TABLE_END = "<!-- coverage table start -->", "<!-- coverage table end -->"
TARGET = 0.5
RELOAD_TOLERANCE = 1e-4
NUM_CLASSES = 10


@dataclass(frozen=True)
class Arch:
    """One architecture of the sweep."""

    key: str
    family: str
    library: str  # "timm" or "transformers"
    name: str  # timm model name, or transformers model_type
    image_size: int = 64
    kwargs: dict[str, Any] = field(default_factory=dict)  # timm create_model args / transformers config overrides
    skip: str = ""  # why it is listed but not run (not an image classifier on pixel inputs here)


def _timm(family: str, name: str, image_size: int = 64, **kwargs: Any) -> Arch:
    return Arch(name, family, "timm", name, image_size, kwargs)


def _hf(family: str, model_type: str, image_size: int = 64, skip: str = "", **overrides: Any) -> Arch:
    return Arch(f"hf_{model_type}", family, "transformers", model_type, image_size, overrides, skip)


_VIT_SMALL = dict(embed_dim=64, depth=2, num_heads=2)
_HF_VIT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, patch_size=8)
_HF_STAGES = dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])
_HF_SWIN = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=4, patch_size=2)

TIMM_ARCHS = [
    _timm("ResNet", "resnet18"),
    _timm("ResNet-D", "resnet26d"),
    _timm("ResNeXt", "resnext26ts"),
    _timm("SE-ResNet", "legacy_seresnet18"),
    _timm("Res2Net", "res2net50_14w_8s"),
    _timm("ResNeSt", "resnest14d"),
    _timm("NFNet", "nf_resnet26"),
    _timm("RegNetX", "regnetx_002"),
    _timm("RegNetY", "regnety_002"),
    _timm("VGG", "cifar_vgg16", 32),
    _timm("MobileNetV2", "mobilenetv2_050"),
    _timm("MobileNetV3", "mobilenetv3_small_050"),
    _timm("MobileNetV4", "mobilenetv4_conv_small"),
    _timm("EfficientNet", "efficientnet_b0"),
    _timm("EfficientNetV2", "tf_efficientnetv2_b0"),
    _timm("MixNet", "mixnet_s"),
    _timm("LCNet", "lcnet_050"),
    _timm("ReXNet", "rexnet_100"),
    _timm("GhostNet", "ghostnet_050"),
    _timm("GhostNetV2", "ghostnetv2_100"),
    _timm("ConvNeXt", "convnext_atto"),
    _timm("ConvNeXtV2", "convnextv2_atto"),
    _timm("DenseNet", "densenet121"),
    _timm("Inception", "inception_v3", 96),
    _timm("InceptionNeXt", "inception_next_atto"),
    _timm("Xception", "xception41"),
    _timm("CSPNet", "cspresnet50"),
    _timm("CSPDarkNet3", "cs3darknet_s"),
    _timm("DLA", "dla34"),
    _timm("DPN", "dpn48b"),
    _timm("HRNet", "hrnet_w18_small"),
    _timm("VoVNet", "ese_vovnet19b_slim_dw"),
    _timm("SelecSLS", "selecsls42b"),
    _timm("HGNetV2", "hgnetv2_b0"),
    _timm("RepVGG", "repvgg_a0"),
    _timm("MobileOne", "mobileone_s0"),
    _timm("RepViT", "repvit_m0_9"),
    _timm("FastViT", "fastvit_t8"),
    _timm("StarNet", "starnet_s1"),
    _timm("ViT", "vit_tiny_patch16_224", img_size=64),
    _timm("DeiT", "deit_tiny_patch16_224", img_size=64),
    # Four heads: with two, the 25 % floor keeps half the heads, and the unpruned patch embedding
    # of a two-block model caps the cut at 45.5 %.
    _timm("BEiT", "beit_base_patch16_224", img_size=64, **{**_VIT_SMALL, "num_heads": 4}),
    _timm("EVA-02", "eva02_tiny_patch14_224", 56, img_size=56, depth=2),
    _timm("CaiT", "cait_xxs24_224", img_size=64, depth=2),
    _timm("XCiT", "xcit_nano_12_p16_224", img_size=64, depth=2),
    _timm("Swin", "swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(1, 1, 1, 1), embed_dim=32),
    _timm("SwinV2", "swinv2_tiny_window8_256", img_size=64, window_size=4, depths=(1, 1, 1, 1), embed_dim=48),
    _timm("LeViT", "levit_128s", img_size=64),
    _timm("PoolFormer", "poolformer_s12"),
    _timm("ConvFormer", "convformer_s18"),
    _timm("CAFormer", "caformer_s18"),
    _timm("EfficientFormer", "efficientformer_l1", 224),  # attention biases fixed to a 7x7 grid
    _timm("EfficientFormerV2", "efficientformerv2_s0", img_size=64),
    _timm("MobileViT", "mobilevit_xxs"),
    _timm("EdgeNeXt", "edgenext_xx_small"),
    _timm("TinyViT", "tiny_vit_5m_224"),
    _timm("PVTv2", "pvt_v2_b0"),
    _timm("Twins", "twins_pcpvt_small", depths=(1, 1, 1, 1)),
    _timm("CoAtNet", "coatnet_nano_rw_224", img_size=64),
    _timm("MaxViT", "maxvit_pico_rw_256", img_size=64),
    _timm("GCViT", "gcvit_xxtiny", img_size=64),
    _timm("FocalNet", "focalnet_tiny_srf"),
    _timm("EfficientViT (MIT)", "efficientvit_b0"),
    _timm("EfficientViT (MSRA)", "efficientvit_m0", img_size=64),
    _timm("MLP-Mixer", "mixer_s16_224", img_size=64),
    _timm("ResMLP", "resmlp_12_224", img_size=64),
]

TRANSFORMERS_ARCHS = [
    _hf("ViT", "vit", 32, **_HF_VIT),
    _hf("DeiT", "deit", 32, **_HF_VIT),
    _hf("BEiT", "beit", 32, **_HF_VIT),
    _hf("Data2Vec-Vision", "data2vec-vision", 32, **_HF_VIT),
    _hf("ViT-MSN", "vit_msn", 32, **_HF_VIT),
    _hf("I-JEPA", "ijepa", 32, **_HF_VIT),
    _hf("DINOv2", "dinov2", 32, **_HF_VIT),
    _hf("DINOv2+registers", "dinov2_with_registers", 32, **_HF_VIT),
    _hf("Swin", "swin", 64, **_HF_SWIN),
    _hf("Swinv2", "swinv2", 64, **_HF_SWIN),
    _hf("Donut-Swin", "donut-swin", 64, **_HF_SWIN),
    _hf("ConvNeXt", "convnext", 64, **_HF_STAGES),
    _hf("ConvNeXtV2", "convnextv2", 64, **_HF_STAGES),
    _hf("ResNet", "resnet", 64, embedding_size=16, **_HF_STAGES),
    _hf("RegNet", "regnet", 64, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], groups_width=8),
    _hf("BiT", "bit", 64, embedding_size=32, num_groups=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1]),
    _hf("MobileNetV1", "mobilenet_v1", 64, depth_multiplier=0.25),
    _hf("MobileNetV2", "mobilenet_v2", 64, depth_multiplier=0.35),
    _hf("EfficientNet", "efficientnet", 64, width_coefficient=0.5, depth_coefficient=0.5, hidden_dim=640),
    _hf("PoolFormer", "poolformer", 64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
    _hf("PVT", "pvt", 64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4]),
    _hf("PVTv2", "pvt_v2", 64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4]),
    _hf("SegFormer", "segformer", 64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
        num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=32),
    _hf("MobileViT", "mobilevit", 64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 32, 32, 64]),
    _hf("MobileViTV2", "mobilevitv2", 64, width_multiplier=0.5),
    _hf("LeViT", "levit", 64, hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
        key_dim=[8, 8, 8]),
    _hf("CvT", "cvt", 64, depth=[1, 2, 3]),  # transformers 5.23 indexes drop_path_rates by stage: depth[i] > i
    _hf("FocalNet", "focalnet", 64, embed_dim=16, depths=[1, 1, 1, 1]),
    _hf("Hiera", "hiera", 64, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4]),
    _hf("DiNAT", "dinat", 64, skip="needs the natten library (neighbourhood-attention kernels), not installed"),
    _hf("SwiftFormer", "swiftformer", 64, embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1]),
    _hf("HGNetV2", "hgnet_v2", 64),
    _hf("TextNet", "textnet", 64),
    _hf("PP-LCNet", "pp_lcnet", 64, scale=0.25),
    _hf("CLIP (vision)", "clip", 32, vision_config=dict(_HF_VIT, image_size=32)),
    _hf("SigLIP (vision)", "siglip", 32, vision_config=dict(_HF_VIT, image_size=32)),
    _hf("SigLIP2 (vision)", "siglip2", 32, skip="takes patchified pixel_values with spatial_shapes, not images"),
    _hf("MetaCLIP 2 (vision)", "metaclip_2", 32, vision_config=dict(_HF_VIT, image_size=32)),
    _hf("Perceiver", "perceiver", 32, num_latents=16, d_latents=32, d_model=32, num_blocks=1,
        num_self_attends_per_block=1, num_self_attention_heads=2, num_cross_attention_heads=1),
    _hf("ImageGPT", "imagegpt", 32, skip="takes colour-cluster token ids, not pixel values"),
    _hf("timm wrapper", "timm_wrapper", 64, architecture="resnet18"),
    _hf("ShieldGemma 2", "shieldgemma2", 32, skip="a multimodal language model (Gemma 3) that classifies prompts"),
]

ARCHS = {arch.key: arch for arch in TIMM_ARCHS + TRANSFORMERS_ARCHS}


# ---------------------------------------------------------------------------- one architecture
def build(arch: Arch):
    """The dense model (random weights) of ``arch``."""
    if arch.library == "timm":
        import timm

        return timm.create_model(arch.name, pretrained=False, num_classes=NUM_CLASSES, **arch.kwargs)
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    config = transformers.CONFIG_MAPPING[arch.name](num_labels=NUM_CLASSES, **arch.kwargs)
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        config.image_size = arch.image_size
    elif isinstance(size, (list, tuple)):
        config.image_size = [arch.image_size] * len(size)
    class_names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[arch.name]
    model_class = getattr(transformers, class_names if isinstance(class_names, str) else class_names[0])
    return model_class(config)


class _RandomImages:
    """Random images and labels: only the shapes matter for a coverage run."""

    def __init__(self, image_size: int, n: int = 16) -> None:
        import torch

        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, image_size, image_size, generator=generator)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}


def _logits(model, x):
    from hf_prune.models.forward import logits_of

    return logits_of(model(x)).float()


def run_arch(arch: Arch, work_dir: Path) -> dict[str, Any]:
    """Prune, save and reload one architecture; the row of the table (raises on failure)."""
    import torch

    import hf_prune
    from hf_prune.latency import measure_latency_ms
    from hf_prune.structure import MacsModel, StructureGraph, UnprunableLayerError, count_macs_params
    from hf_prune.structure.graph import attention_kinds

    torch.manual_seed(0)
    model = build(arch).eval()
    x = torch.randn(2, 3, arch.image_size, arch.image_size)
    dense = copy.deepcopy(model)
    dense_macs, dense_params = count_macs_params(dense, x[:1])
    refusal, ignored = "", []
    try:
        graph = StructureGraph(dense, x[:1])
    except UnprunableLayerError as err:
        if not err.ignored_layers:
            raise
        refusal, ignored = str(err), err.ignored_layers  # what a user does next: pass the suggested fix
        graph = StructureGraph(dense, x[:1], ignored_layers=ignored)
    analytic = MacsModel(graph, x[:1])
    kept = graph.kept_attention
    args = hf_prune.PruningArguments(
        output_dir=str(work_dir), pruning_method="magnitude", target_flops_reduction=TARGET, max_steps=3,
        prune_epoch=0.25, ignored_layers=ignored, per_device_train_batch_size=4, learning_rate=1e-3, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1, seed=0, eval_around_prune=False, card_latency=False,
    )
    trainer = hf_prune.PruningTrainer(model=model, args=args, train_dataset=_RandomImages(arch.image_size))
    trainer.train()
    if not trainer.pruning_events:
        raise RuntimeError("the trainer did not prune")
    event = trainer.pruning_events[-1]
    slim = trainer.model.eval()
    slim_macs, slim_params = count_macs_params(slim, x[:1])
    predicted = analytic.macs({name: before - after for name, (before, after) in event["widths"].items()})
    trainer.save_model(str(work_dir / "slim"))
    reloaded = hf_prune.AutoPrunedModel.from_pretrained(str(work_dir / "slim")).eval()
    with torch.no_grad():
        reload_diff = (_logits(slim, x) - _logits(reloaded, x)).abs().max().item()
    latency_ratio = measure_latency_ms(slim, x.shape[1:], 8, min_run_time=0.2) / measure_latency_ms(
        dense, x.shape[1:], 8, min_run_time=0.2
    )
    return {
        "reduction": 1 - slim_macs / dense_macs,
        "analytic_error": abs(predicted - slim_macs) / slim_macs,
        "reload_max_abs_diff": reload_diff,
        "latency_ratio": latency_ratio,
        "dense_macs": dense_macs,
        "dense_params": dense_params,
        "params_ratio": slim_params / dense_params,
        "groups": len(graph.groups),
        "refusal": refusal,
        "ignored_layers": len(ignored),
        "kept_attention": (f"{len(kept)} attention layer{'s' * (len(kept) > 1)} kept whole "
                           f"({', '.join(attention_kinds(dense, kept))})" if kept else ""),
    }


def status_of(row: dict[str, Any]) -> str:
    """pruned (target met, reload equal), partly (pruned less or reload differs), refused, failed, not run.

    A refusal that names its fix (``ignored_layers``) is retried with it, as a user would.
    """
    if row.get("skipped"):
        return "not run"
    if row.get("error"):
        kind = row.get("error_type", "")
        if kind in ("UnprunableLayerError", "RefusedArchitectureError"):
            return "refused"
        return "partly" if kind == "UnreachableTargetError" else "failed"
    ok = row["reduction"] >= TARGET - 0.005 and row["reload_max_abs_diff"] <= RELOAD_TOLERANCE
    if row.get("refusal"):
        return "refused; pruned with its fix" if ok else "refused; partly with its fix"
    return "pruned" if ok else "partly"


def run_isolated(arch: Arch, timeout: float) -> dict[str, Any]:
    """``arch``'s row, run in a forked child: a crash, hang or timeout becomes an error row.

    Forking after the imports (torch, timm, transformers) saves their ~10 s per architecture.
    """
    started = time.perf_counter()
    if arch.skip:
        return _finish_row(arch, {"skipped": arch.skip}, started)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child, args=(arch, sender))
    child.start()
    sender.close()
    try:
        row = receiver.recv() if receiver.poll(timeout) else {"error": f"timed out after {timeout:.0f} s",
                                                               "error_type": "Timeout"}
    except EOFError:  # the child died without a row
        row = {"error": f"the worker crashed (exit code {child.exitcode})", "error_type": "Crash"}
    child.kill()
    child.join()
    return _finish_row(arch, row, started)


def _child(arch: Arch, sender) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sender.send(_guarded_row(arch, Path(tmp)))


def run_in_process(arch: Arch) -> dict[str, Any]:
    """``arch``'s row, run here (for tests): an exception becomes an error row."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        return _finish_row(arch, _guarded_row(arch, Path(tmp)), started)


def _guarded_row(arch: Arch, work_dir: Path) -> dict[str, Any]:
    try:
        return run_arch(arch, work_dir)
    except Exception as err:  # noqa: BLE001  (every failure is a result of the sweep)
        last = traceback.extract_tb(err.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        return {"error": f"{str(err)[:600]} (at {where})", "error_type": type(err).__name__}


def _finish_row(arch: Arch, row: dict[str, Any], started: float) -> dict[str, Any]:
    row = {"key": arch.key, "family": arch.family, "library": arch.library, "name": arch.name,
           "image_size": arch.image_size, **row, "seconds": round(time.perf_counter() - started, 1)}
    row["status"] = status_of(row)
    return row


# ---------------------------------------------------------------------------- tables
def summary_line(rows: list[dict[str, Any]], library: str) -> str:
    """E.g. ``timm: 60/66 prune to 50% MACs and reload equal (91%)`` (rows not run are left out)."""
    mine = [r for r in rows if r["library"] == library and r["status"] != "not run"]
    pruned = sum(r["status"] == "pruned" for r in mine)
    with_fix = sum(r["status"] == "refused; pruned with its fix" for r in mine)
    share = pruned / len(mine) if mine else 0.0
    line = f"{library}: {pruned}/{len(mine)} prune to {TARGET:.0%} MACs and reload equal ({share:.0%})"
    return line + (f", {with_fix} more with the ignored_layers their refusal names" if with_fix else "")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The coverage table: family -> status, reduction, notes."""
    lines = [summary_line(rows, "timm") + "; " + summary_line(rows, "transformers") + ".", "",
             "| library | family | model | status | MACs cut | analytic err | reload max abs diff | latency ratio "
             "| notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped") or r.get("error"):
            note = r.get("skipped") or r["error_type"] + ": " + r["error"]
            cells = ["", "", "", "", _note(note)]
        else:
            cells = [f"{r['reduction']:.1%}", f"{r['analytic_error']:.2%}", f"{r['reload_max_abs_diff']:.1e}",
                     f"{r['latency_ratio']:.2f}",
                     _note("; ".join(filter(None, (r.get("refusal"), r.get("kept_attention")))))]
        lines.append(f"| {r['library']} | {r['family']} | `{r['name']}` | {r['status']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _note(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def replace_readme_table(table: str) -> None:
    """Put ``table`` between the README's coverage markers."""
    text = README.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"README.md lacks the markers {TABLE_START} ... {TABLE_END}")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_atomically(README, f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}")


def _merged(previous: Path, new_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``previous`` with ``new_rows`` replacing theirs, in sweep order."""
    by_key = {r["key"]: r for r in map(json.loads, previous.read_text().splitlines())}
    by_key.update({r["key"]: r for r in new_rows})
    return [by_key[key] for key in ARCHS if key in by_key]


# ---------------------------------------------------------------------------- CLI
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated architecture keys (default: all)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per architecture")
    parser.add_argument("--output", type=Path, default=RESULTS / "coverage", help="path stem of .jsonl and .md")
    parser.add_argument("--readme", action="store_true", help="also replace the README's coverage table")
    parser.add_argument("--update", action="store_true", help="replace only the rows run in the existing .jsonl")
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = make_parser().parse_args(argv)
    import hf_prune  # noqa: F401  (imported once, before the children fork)

    keys = args.only.split(",") if args.only else list(ARCHS)
    unknown = [k for k in keys if k not in ARCHS]
    if unknown:
        raise SystemExit(f"unknown architectures {unknown}; known: {sorted(ARCHS)}")
    rows = []
    partial = args.output.with_suffix(".partial.jsonl")  # rows so far, should the sweep be stopped
    for key in keys:
        rows.append(run_isolated(ARCHS[key], args.timeout))
        write_atomically(partial, "".join(json.dumps(r) + "\n" for r in rows))
        r = rows[-1]
        print(f"{r['key']:32s} {r['status']:8s} {r.get('reduction', float('nan')):.3f} {r['seconds']:6.1f}s "
              f"{r.get('error', '')[:150]}", flush=True)
    if args.update:
        rows = _merged(args.output.with_suffix(".jsonl"), rows)
    write_atomically(args.output.with_suffix(".jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    partial.unlink()
    table = markdown_table(rows)
    write_atomically(args.output.with_suffix(".md"), table)
    if args.readme:
        replace_readme_table(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
