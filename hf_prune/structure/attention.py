"""Attention families the structure engine prunes head by head.

For a transformer only whole attention heads and MLP hidden units are pruned; the residual
stream (embedding width) is kept, so every block still adds tensors of the same width and
pretrained positional embeddings stay valid. Each family tells which projections carry heads,
how a projection's channel index maps to a head, and how to fix the head-count attributes
after torch-pruning has sliced the weights.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AttentionFamily:
    """How one attention implementation stores its heads."""

    matches: Callable[[nn.Module], bool]
    """True for modules of this family."""
    head_projections: Callable[[nn.Module], tuple[nn.Linear, ...]]
    """Linears whose output channels are laid out per head (q, k, v or fused qkv)."""
    head_of_channel: Callable[[nn.Module, nn.Linear, int], int]
    """Head owning channel ``i`` of a head projection's output."""
    head_attributes: Callable[[nn.Module], dict[str, int]]
    """Shape-defining attributes, recorded in the shape spec."""
    sync_num_heads: Callable[[nn.Module], None]
    """Update the head-count attributes from the (pruned) projection widths."""
    head_parameters: Callable[[nn.Module], tuple[tuple[str, int], ...]] = lambda attn: ()
    """Parameters holding one slice (or one equal block) per head besides the projections
    (relative position bias tables, BEiT's q and v biases), as ``(name inside the module, head
    dimension)``; sliced along with the heads."""
    head_consumers: Callable[[nn.Module], tuple[nn.Module, ...]] = lambda attn: ()
    """Linears or 1x1 convs reading the heads' outputs (one block of input columns per head) that
    the engine slices itself: the forward splits each head's q, k, v apart (LeViT, TinyViT, MaxViT),
    a split torch-pruning cannot follow. Empty when torch-pruning reaches the consumers."""
    tracing: Callable[[nn.Module], AbstractContextManager] = lambda attn: contextlib.nullcontext()
    """A context, entered only while torch-pruning traces the model, in which it can follow the heads
    to their consumer: BEiT and SwinV2 then call ``qkv`` as a module (they otherwise read its weight
    directly, for their fused bias) and run their head-pruned forward (SwinV2's gives each unbound
    q, k, v one consumer)."""


def _present(attn: nn.Module, candidates: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    params = dict(attn.named_parameters())
    return tuple((name, dim) for name, dim in candidates if name in params)


def _timm_families() -> list[AttentionFamily]:
    from timm.layers.attention import Attention
    from timm.models.efficientformer import Attention as EfficientFormerAttention
    from timm.models.levit import Attention as LevitAttention
    from timm.models.swin_transformer import WindowAttention
    from timm.models.tiny_vit import Attention as TinyVitAttention

    def sync_heads(attn: nn.Module) -> None:
        attn.num_heads = attn.qkv.out_features // (3 * attn.head_dim)
        attn.attn_dim = attn.num_heads * attn.head_dim

    def window_head_dim(attn: nn.Module) -> int:
        return attn.qkv.out_features // (3 * attn.num_heads)

    def sync_window_heads(attn: nn.Module) -> None:
        # WindowAttention keeps no head_dim; its bias table holds one column per head.
        attn.num_heads = attn.relative_position_bias_table.shape[-1]

    def sync_split_heads(attn: nn.Module) -> None:
        # Each head's projection rows are its q, k and v: key_dim, key_dim and val_dim of them.
        attn.num_heads = split_head_projection(attn).out_features // (2 * attn.key_dim + attn.val_dim)
        if hasattr(attn, "val_attn_dim"):  # LeViT, EfficientFormer
            attn.key_attn_dim, attn.val_attn_dim = attn.key_dim * attn.num_heads, attn.val_dim * attn.num_heads
        else:  # TinyViT
            attn.out_dim = attn.val_dim * attn.num_heads
        attn.attention_bias_cache = {}  # biases cached per device, with the old head count

    def split_head_projection(attn: nn.Module) -> nn.Linear:
        return attn.qkv.linear if type(attn) is LevitAttention else attn.qkv

    def split_head_consumer(attn: nn.Module) -> nn.Linear:
        return attn.proj.ln.linear if type(attn) is LevitAttention else attn.proj

    return [
        AttentionFamily(
            # LeViT (tokens, not its conv mode), TinyViT, EfficientFormer: qkv laid out as (num_heads, q | k | v).
            matches=lambda m: (type(m) in (TinyVitAttention, EfficientFormerAttention)
                               or type(m) is LevitAttention and not m.use_conv),
            head_projections=lambda attn: (split_head_projection(attn),),
            head_of_channel=lambda attn, proj, i: i // (2 * attn.key_dim + attn.val_dim),
            head_attributes=lambda attn: {"num_heads": attn.num_heads},
            sync_num_heads=sync_split_heads,
            head_parameters=lambda attn: (("attention_biases", 0),),
            head_consumers=lambda attn: (split_head_consumer(attn),),
        ),
        AttentionFamily(
            matches=lambda m: type(m) is Attention,
            head_projections=lambda attn: (attn.qkv,),
            # qkv output is laid out as (3, num_heads, head_dim).
            head_of_channel=lambda attn, proj, i: (i % attn.attn_dim) // attn.head_dim,
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "head_dim": attn.head_dim},
            sync_num_heads=sync_heads,
        ),
        AttentionFamily(
            matches=lambda m: type(m) is WindowAttention,
            head_projections=lambda attn: (attn.qkv,),
            head_of_channel=lambda attn, proj, i: (i % (proj.out_features // 3)) // window_head_dim(attn),
            head_attributes=lambda attn: {"num_heads": attn.num_heads},
            sync_num_heads=sync_window_heads,
            head_parameters=lambda attn: (("relative_position_bias_table", -1),),
        ),
    ]


def _hybrid_families() -> list[AttentionFamily]:
    """Attention of hybrid (conv + attention) models in timm and transformers.

    Not here, because their forward reshapes the heads' output to the input width (or derives the
    head size from it), so no head can go while the residual width stays: timm's ``twins``
    attention, ``xcit.XCA`` and ``edgenext.CrossCovarianceAttn``. Those are kept whole (timm's
    CAFormer and PVTv2 attention get a fixed forward: :func:`_reshaping_families`).
    """
    from timm.layers.pos_embed_rel import RelPosBias, RelPosBiasTf
    from timm.models.maxxvit import Attention2d, AttentionCl
    from transformers.models.levit.modeling_levit import LevitAttention

    # Relative position bias tables of maxxvit's attention -> their head dimension.
    rel_pos_head_dim = {RelPosBias: -1, RelPosBiasTf: 0}

    def is_maxxvit(m: nn.Module) -> bool:
        return type(m) in (Attention2d, AttentionCl) and (m.rel_pos is None or type(m.rel_pos) in rel_pos_head_dim)

    def maxxvit_head_of_channel(attn: nn.Module, proj: nn.Module, i: int) -> int:
        if attn.head_first:  # qkv channels laid out as (num_heads, q | k | v, dim_head)
            return i // (3 * attn.dim_head)
        return (i % (proj.weight.shape[0] // 3)) // attn.dim_head  # (q | k | v, num_heads, dim_head)

    def maxxvit_head_parameters(attn: nn.Module) -> tuple[tuple[str, int], ...]:
        if attn.rel_pos is None:
            return ()
        return (("rel_pos.relative_position_bias_table", rel_pos_head_dim[type(attn.rel_pos)]),)

    def sync_maxxvit_heads(attn: nn.Module) -> None:
        attn.num_heads = attn.qkv.weight.shape[0] // (3 * attn.dim_head)
        rel_pos = attn.rel_pos
        if rel_pos is not None:  # get_bias views the table as bias_shape, which holds the head count
            shape = list(rel_pos.bias_shape)
            shape[rel_pos_head_dim[type(rel_pos)]] = attn.num_heads
            rel_pos.bias_shape = tuple(shape)
            if hasattr(rel_pos, "num_heads"):
                rel_pos.num_heads = attn.num_heads

    def levit_head_width(attn: nn.Module) -> int:
        return (2 + attn.attention_ratio) * attn.key_dim  # q, k, v rows of one head

    def sync_levit_heads(attn: nn.Module) -> None:
        attn.num_attention_heads = attn.queries_keys_values.linear.out_features // levit_head_width(attn)
        attn.out_dim_keys_values = attn.num_attention_heads * levit_head_width(attn)
        attn.out_dim_projection = attn.num_attention_heads * attn.attention_ratio * attn.key_dim
        attn.attention_bias_cache = {}  # biases cached per device, with the old head count

    return [
        AttentionFamily(
            # transformers' LeViT: as timm's, qkv laid out as (num_heads, q | k | v); the forward splits them.
            matches=lambda m: type(m) is LevitAttention,
            head_projections=lambda attn: (attn.queries_keys_values.linear,),
            head_of_channel=lambda attn, proj, i: i // levit_head_width(attn),
            # head_dim, stated in a transformers model's config.json: that of q and k (v's is attention_ratio x).
            head_attributes=lambda attn: {"num_heads": attn.num_attention_heads, "head_dim": attn.key_dim},
            sync_num_heads=sync_levit_heads,
            head_parameters=lambda attn: (("attention_biases", 0),),
            head_consumers=lambda attn: (attn.projection.linear,),
        ),
        AttentionFamily(
            # CoAtNet, MaxViT: a qkv conv (Attention2d) or linear (AttentionCl) and a per-head bias table.
            matches=is_maxxvit,
            head_projections=lambda attn: (attn.qkv,),
            head_of_channel=maxxvit_head_of_channel,
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "dim_head": attn.dim_head},
            sync_num_heads=sync_maxxvit_heads,
            head_parameters=maxxvit_head_parameters,
            head_consumers=lambda attn: (attn.proj,),
        ),
    ]


def _head_count_attribute(attn: nn.Module) -> str | None:
    return next((a for a in ("num_attention_heads", "num_heads") if isinstance(getattr(attn, a, None), int)), None)


def _is_qkv_attention(m: nn.Module) -> bool:
    """transformers' current layout (ViT, DeiT, DINOv2, Swin, CLIP, ...): q/k/v_proj and head_dim."""
    projections = (getattr(m, name, None) for name in ("q_proj", "k_proj", "v_proj"))
    return (all(isinstance(p, nn.Linear) for p in projections) and isinstance(getattr(m, "head_dim", None), int)
            and _head_count_attribute(m) is not None)


def _is_query_key_value_attention(m: nn.Module) -> bool:
    """transformers' older layout (PVT, PVTv2, MobileViT, ...): query/key/value and attention_head_size."""
    projections = (getattr(m, name, None) for name in ("query", "key", "value"))
    return (all(isinstance(p, nn.Linear) for p in projections)
            and isinstance(getattr(m, "attention_head_size", None), int)
            and isinstance(getattr(m, "num_attention_heads", None), int) and hasattr(m, "all_head_size"))


_TRANSFORMERS_HEAD_PARAMETERS = (
    ("relative_position_bias.relative_position_bias_table", -1),  # Swin
    ("relative_position_bias_table", -1),  # Donut-Swin
    ("logit_scale", 0),  # Swinv2's cosine attention: one temperature per head
    ("continuous_position_bias_mlp.2.weight", 0),  # Swinv2: the bias MLP outputs one value per head
)


def head_linears(attn: nn.Module, family: AttentionFamily) -> list[nn.Linear]:
    """Linears inside ``attn`` with one output per head (Swinv2's bias MLP): sliced as head parameters."""
    owners = (attn.get_submodule(name.rpartition(".")[0]) for name, _ in family.head_parameters(attn))
    return [owner for owner in owners if isinstance(owner, nn.Linear)]


def _sync_head_linears(attn: nn.Module) -> None:
    for name, _ in _present(attn, _TRANSFORMERS_HEAD_PARAMETERS):
        owner = attn.get_submodule(name.rpartition(".")[0])
        if isinstance(owner, nn.Linear):
            owner.out_features = owner.weight.shape[0]


def _transformers_families() -> list[AttentionFamily]:
    def sync_heads(attn: nn.Module) -> None:
        # The forward views q/k/v as (-1, head_dim): only the bookkeeping attribute changes.
        setattr(attn, _head_count_attribute(attn), attn.q_proj.out_features // attn.head_dim)

    def sync_hiera_heads(attn: nn.Module) -> None:
        # The forward views qkv as (3, num_heads, head_dim) and the heads' output as hidden_size_output.
        attn.num_heads = attn.qkv.out_features // (3 * attn.head_dim)
        attn.hidden_size_output = attn.num_heads * attn.head_dim

    def cvt_head_dim(attn: nn.Module) -> int:
        return attn.embed_dim // attn.num_heads

    def sync_cvt_heads(attn: nn.Module) -> None:
        # The forward views q/k/v by (num_heads, embed_dim // num_heads): both follow the heads.
        head_dim = cvt_head_dim(attn)
        attn.num_heads = attn.projection_query.out_features // head_dim
        attn.embed_dim = attn.num_heads * head_dim

    def sync_query_heads(attn: nn.Module) -> None:
        attn.num_attention_heads = attn.query.out_features // attn.attention_head_size
        attn.all_head_size = attn.num_attention_heads * attn.attention_head_size
        _sync_head_linears(attn)

    return [
        AttentionFamily(
            # Hiera's mask-unit attention: fused qkv laid out as (3, num_heads, head_dim).
            matches=lambda m: type(m).__name__ == "HieraMaskUnitAttention",
            head_projections=lambda attn: (attn.qkv,),
            head_of_channel=lambda attn, proj, i: (i % (proj.out_features // 3)) // attn.head_dim,
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "head_dim": attn.head_dim},
            sync_num_heads=sync_hiera_heads,
        ),
        AttentionFamily(
            # CvT: separate projection_query/key/value after the convolutional projections.
            matches=lambda m: type(m).__name__ == "CvtSelfAttention",
            head_projections=lambda attn: (attn.projection_query, attn.projection_key, attn.projection_value),
            head_of_channel=lambda attn, proj, i: i // cvt_head_dim(attn),
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "head_dim": cvt_head_dim(attn)},
            sync_num_heads=sync_cvt_heads,
        ),
        AttentionFamily(
            matches=_is_qkv_attention,
            head_projections=lambda attn: (attn.q_proj, attn.k_proj, attn.v_proj),
            head_of_channel=lambda attn, proj, i: i // attn.head_dim,
            head_attributes=lambda attn: {"num_heads": getattr(attn, _head_count_attribute(attn)),
                                          "head_dim": attn.head_dim},
            sync_num_heads=sync_heads,
            head_parameters=lambda attn: _present(attn, _TRANSFORMERS_HEAD_PARAMETERS),
        ),
        AttentionFamily(
            matches=_is_query_key_value_attention,
            head_projections=lambda attn: (attn.query, attn.key, attn.value),
            head_of_channel=lambda attn, proj, i: i // attn.attention_head_size,
            head_attributes=lambda attn: {"num_heads": attn.num_attention_heads, "head_dim": attn.attention_head_size},
            sync_num_heads=sync_query_heads,
            head_parameters=lambda attn: _present(attn, _TRANSFORMERS_HEAD_PARAMETERS),
        ),
    ]


@contextlib.contextmanager
def _without_fused_bias(attn: nn.Module) -> Iterator[None]:
    """Run ``attn`` as if it had no q/v bias: its forward then calls ``qkv`` instead of ``F.linear``."""
    q_bias = attn.q_bias
    attn.q_bias = None
    try:
        yield
    finally:
        attn.q_bias = q_bias


@contextlib.contextmanager
def _as_class(module: nn.Module, cls: type[nn.Module]) -> Iterator[None]:
    """Run ``module`` as an instance of ``cls`` (a subclass with the same computation)."""
    original = module.__class__
    module.__class__ = cls
    try:
        yield
    finally:
        module.__class__ = original


def _fused_bias_tracing(attn: nn.Module, traced_class: type[nn.Module]) -> AbstractContextManager:
    """Trace ``attn`` without its fused bias, with the forward of ``traced_class``."""
    stack = contextlib.ExitStack()
    stack.enter_context(_as_class(attn, traced_class))
    if attn.q_bias is not None:
        stack.enter_context(_without_fused_bias(attn))
    return stack


def _fused_bias_families() -> list[AttentionFamily]:
    """timm's BEiT and SwinV2 attention: ``qkv`` applied as ``F.linear(x, qkv.weight, cat(q_bias, k_bias, v_bias))``.

    torch-pruning never sees ``qkv`` called, so they are traced without their bias
    (:func:`_without_fused_bias`: the same channel dependencies) and the q and v biases are sliced
    as head parameters (one block of head_dim entries per head). Their forward reshapes the heads'
    output to the input width: :func:`~hf_prune.structure.forward_fixes.fix_forwards` swaps it, and
    they are traced with the swapped forward (the same computation).
    """
    from timm.models.beit import Attention as BeitAttention
    from timm.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2

    from hf_prune.structure.forward_fixes import HeadPrunedBeitAttention, HeadPrunedWindowAttentionV2

    def fused_head_of_channel(attn: nn.Module, proj: nn.Linear, i: int) -> int:
        # qkv output is laid out as (3, num_heads, head_dim).
        return (i % (proj.out_features // 3)) // (proj.out_features // (3 * attn.num_heads))

    def sync_k_bias(attn: nn.Module) -> None:
        if attn.k_bias is not None:  # a zero buffer (k has no bias), as wide as q_bias
            attn.k_bias = torch.zeros_like(attn.q_bias)

    def sync_beit_heads(attn: nn.Module) -> None:
        head_dim = round(attn.scale ** -2)  # BEiT keeps no head_dim; its scale is head_dim ** -0.5
        attn.num_heads = attn.qkv.out_features // (3 * head_dim)
        sync_k_bias(attn)

    def sync_window_heads(attn: nn.Module) -> None:
        attn.num_heads = attn.logit_scale.shape[0]  # one temperature per head
        attn.cpb_mlp[-1].out_features = attn.cpb_mlp[-1].weight.shape[0]
        sync_k_bias(attn)

    return [
        AttentionFamily(
            matches=lambda m: isinstance(m, BeitAttention),  # also once its forward is fixed
            head_projections=lambda attn: (attn.qkv,),
            head_of_channel=fused_head_of_channel,
            head_attributes=lambda attn: {"num_heads": attn.num_heads},
            sync_num_heads=sync_beit_heads,
            head_parameters=lambda attn: _present(
                attn, (("q_bias", 0), ("v_bias", 0), ("relative_position_bias_table", -1))
            ),
            tracing=lambda attn: _fused_bias_tracing(attn, HeadPrunedBeitAttention),
        ),
        AttentionFamily(
            matches=lambda m: isinstance(m, WindowAttentionV2),
            head_projections=lambda attn: (attn.qkv,),
            head_of_channel=fused_head_of_channel,
            head_attributes=lambda attn: {"num_heads": attn.num_heads},
            sync_num_heads=sync_window_heads,
            head_parameters=lambda attn: _present(
                attn, (("q_bias", 0), ("v_bias", 0), ("logit_scale", 0), (f"cpb_mlp.{len(attn.cpb_mlp) - 1}.weight", 0))
            ),
            tracing=lambda attn: _fused_bias_tracing(attn, HeadPrunedWindowAttentionV2),
        ),
    ]


def _reshaping_families() -> list[AttentionFamily]:
    """timm's MetaFormer (CAFormer) and PVTv2 attention, whose forward reshapes the heads' output to
    the input width: :func:`~hf_prune.structure.forward_fixes.fix_forwards` swaps it once heads go."""
    from timm.models.metaformer import Attention as MetaFormerAttention
    from timm.models.pvt_v2 import Attention as PvtV2Attention

    def sync_metaformer_heads(attn: nn.Module) -> None:
        attn.num_heads = attn.qkv.out_features // (3 * attn.head_dim)
        attn.attention_dim = attn.num_heads * attn.head_dim

    def pvt_v2_head_of_channel(attn: nn.Module, proj: nn.Linear, i: int) -> int:
        # q laid out as (num_heads, head_dim), kv as (2, num_heads, head_dim).
        return (i if proj is attn.q else i % (proj.out_features // 2)) // attn.head_dim

    def sync_pvt_v2_heads(attn: nn.Module) -> None:
        attn.num_heads = attn.q.out_features // attn.head_dim

    return [
        AttentionFamily(
            matches=lambda m: isinstance(m, MetaFormerAttention),  # also once its forward is fixed
            head_projections=lambda attn: (attn.qkv,),
            # qkv output is laid out as (3, num_heads, head_dim).
            head_of_channel=lambda attn, proj, i: (i % attn.attention_dim) // attn.head_dim,
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "head_dim": attn.head_dim},
            sync_num_heads=sync_metaformer_heads,
        ),
        AttentionFamily(
            matches=lambda m: isinstance(m, PvtV2Attention),
            head_projections=lambda attn: (attn.q, attn.kv),
            head_of_channel=pvt_v2_head_of_channel,
            head_attributes=lambda attn: {"num_heads": attn.num_heads, "head_dim": attn.head_dim},
            sync_num_heads=sync_pvt_v2_heads,
        ),
    ]


@functools.cache
def attention_families() -> tuple[AttentionFamily, ...]:
    """The known families (built on first use: importing timm/transformers is slow)."""
    return (*_timm_families(), *_fused_bias_families(), *_reshaping_families(), *_hybrid_families(),
            *_transformers_families())


def find_attention(model: nn.Module) -> Iterator[tuple[str, nn.Module, AttentionFamily]]:
    """Yield ``(name, module, family)`` for every attention module of a known family."""
    families = attention_families()
    for name, module in model.named_modules():
        for family in families:
            if family.matches(module):
                yield name, module, family
                break
