"""Attention families the structure engine prunes head by head.

For a transformer only whole attention heads and MLP hidden units are pruned; the residual
stream (embedding width) is kept, so every block still adds tensors of the same width and
pretrained positional embeddings stay valid. Each family tells which projections carry heads,
how a projection's channel index maps to a head, and how to fix the head-count attributes
after torch-pruning has sliced the weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class AttentionFamily:
    """How one attention implementation stores its heads."""

    module_type: type[nn.Module]
    head_projections: Callable[[nn.Module], tuple[nn.Linear, ...]]
    """Linears whose output channels are laid out per head (q, k, v or fused qkv)."""
    head_of_channel: Callable[[nn.Module, nn.Linear, int], int]
    """Head owning channel ``i`` of a head projection's output."""
    head_attributes: Callable[[nn.Module], dict[str, int]]
    """Shape-defining attributes, recorded in the shape spec."""
    sync_num_heads: Callable[[nn.Module], None]
    """Update the head-count attributes from the (pruned) projection widths."""


def _timm_families() -> list[AttentionFamily]:
    from timm.layers.attention import Attention

    def sync_heads(attn: nn.Module) -> None:
        attn.num_heads = attn.qkv.out_features // (3 * attn.head_dim)
        attn.attn_dim = attn.num_heads * attn.head_dim

    return [
        AttentionFamily(
            module_type=Attention,
            head_projections=lambda attn: (attn.qkv,),
            # qkv output is laid out as (3, num_heads, head_dim).
            head_of_channel=lambda attn, proj, i: (i % attn.attn_dim) // attn.head_dim,
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "head_dim": attn.head_dim},
            sync_num_heads=sync_heads,
        )
    ]


def _transformers_families() -> list[AttentionFamily]:
    from transformers.models.vit.modeling_vit import ViTAttention

    def sync_heads(attn: nn.Module) -> None:
        # The forward views q/k/v as (-1, head_dim): only the bookkeeping attribute changes.
        attn.num_attention_heads = attn.q_proj.out_features // attn.head_dim

    return [
        AttentionFamily(
            module_type=ViTAttention,
            head_projections=lambda attn: (attn.q_proj, attn.k_proj, attn.v_proj),
            head_of_channel=lambda attn, proj, i: i // attn.head_dim,
            head_attributes=lambda attn: {"num_heads": attn.num_attention_heads, "head_dim": attn.head_dim},
            sync_num_heads=sync_heads,
        )
    ]


@functools.cache
def attention_families() -> tuple[AttentionFamily, ...]:
    """The known families (built on first use: importing timm/transformers is slow)."""
    return (*_timm_families(), *_transformers_families())


def find_attention(model: nn.Module) -> Iterator[tuple[str, nn.Module, AttentionFamily]]:
    """Yield ``(name, module, family)`` for every attention module of a known family."""
    families = attention_families()
    for name, module in model.named_modules():
        for family in families:
            if type(module) is family.module_type:
                yield name, module, family
                break
