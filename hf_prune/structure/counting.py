"""MACs and parameter counting on top of ``torch.utils.flop_counter.FlopCounterMode``.

MACs are FLOPs / 2 (one multiply-accumulate is two floating-point operations). Only matrix
products, convolutions and attention are counted, as in the papers' tables; normalization and
activations are left out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hf_prune.models.forward import run_model

aten = torch.ops.aten


def _cpu_flash_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of the CPU flash-attention kernel, which torch 2.13's counter does not know (it counts 0)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_sdpa_flops}


def count_module_macs(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """MACs of one inference pass, per module name ('' is the whole model; parents include children)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    try:
        # Autograd stays on: under no_grad the counter's module tracker fails on some models (CaiT:
        # "Expected gradient function to be set"). One forward's graph is freed at once.
        with torch.enable_grad(), counter:
            run_model(model, example_inputs)
    finally:
        model.train(was_training)
    per_module = {}
    for tracked_name, op_flops in counter.get_flop_counts().items():
        if tracked_name == "Global":
            continue
        # The tracker prefixes the root module's class name: "ResNet.layer1.0.conv1".
        _, _, name = tracked_name.partition(".")
        per_module[name] = sum(op_flops.values()) // 2
    per_module[""] = counter.get_total_flops() // 2
    return per_module


def count_macs_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """Return ``(macs, params)`` of ``model`` for one forward pass on ``example_inputs``.

    Args:
        model: any ``nn.Module`` (timm or transformers model, pruned or not).
        example_inputs: a batch tensor (MACs scale with its batch size; use batch 1 for per-image
            figures), a tuple of positional inputs or a dict of keyword inputs.
    """
    macs = count_module_macs(model, example_inputs)[""]
    params = sum(p.numel() for p in model.parameters())
    return macs, params


def count_layer_outputs(model: nn.Module, example_inputs: Any) -> int:
    """Elements written by every convolution and linear layer in one inference pass on ``example_inputs``.

    The memory traffic of narrow layers grows with this count (linear in the widths), not with MACs
    (quadratic): where convolutions are memory-bound, a slim model's speed-up tends to this ratio.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    counts = []
    hooks = [layer.register_forward_hook(lambda _, __, output: counts.append(output.numel())) for layer in layers]
    was_training = model.training
    try:
        with torch.no_grad():
            run_model(model.eval(), example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return sum(counts)
