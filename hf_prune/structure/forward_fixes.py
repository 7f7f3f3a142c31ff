"""timm and transformers modules whose forward reads a width from its input that pruning makes differ.

Some forwards take a width that pruning changes from the input tensor or from a stored attribute,
where the pruned model needs their own layers' widths:

- timm's BEiT, SwinV2, MetaFormer (CAFormer) and PVTv2 attention and transformers' PVTv2
  self-attention reshape their heads' output to their input width (fine while every head is
  there);
- FocalNet's modulation splits its input projection's output by its input width (fine while the
  residual stream keeps every channel);
- FocalNet's patch embeddings check their input width against the stored ``num_channels``;
- Hiera's stage-opening layer views its skip projection's output by the stored
  ``hidden_size_output``, and skips that projection once its stored widths agree.

:func:`fix_forwards` gives such modules a subclass whose forward reads their own layers' widths
(the same computation, unchanged for an unpruned module), or syncs the stored attribute. It runs
after every physical prune and again on reload, so nothing beyond the weights and the shape spec
is saved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.beit import Attention as BeitAttention
from timm.models.metaformer import Attention as MetaFormerAttention
from timm.models.pvt_v2 import Attention as PvtV2Attention
from timm.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2
from torch import nn
from transformers.models.focalnet.modeling_focalnet import FocalNetModulation, FocalNetPatchEmbeddings
from transformers.models.hiera.modeling_hiera import HieraLayer
from transformers.models.pvt_v2.modeling_pvt_v2 import PvtV2SelfAttention


class HeadPrunedPvtV2SelfAttention(PvtV2SelfAttention):
    """``PvtV2SelfAttention`` whose heads' output keeps the heads' width before ``proj``."""

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, ...]:
        batch_size, seq_len, num_channels = hidden_states.shape
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        if self.linear_attention or self.spatial_reduction_ratio > 1:
            hidden_states = hidden_states.permute(0, 2, 1).reshape(batch_size, num_channels, height, width)
            if self.linear_attention:
                hidden_states = self.pool(hidden_states)
            hidden_states = self.spatial_reduction(hidden_states).reshape(batch_size, num_channels, -1).permute(0, 2, 1)
            hidden_states = self.layer_norm(hidden_states)
            if self.linear_attention:
                hidden_states = self.act(hidden_states)
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))

        attention_scores = query_layer @ key_layer.transpose(-1, -2) / math.sqrt(self.attention_head_size)
        attention_probs = self.attn_drop(nn.functional.softmax(attention_scores, dim=-1))
        context_layer = (attention_probs @ value_layer).transpose(1, 2).reshape(batch_size, seq_len, self.all_head_size)
        context_layer = self.proj_drop(self.proj(context_layer))
        return (context_layer, attention_probs) if output_attentions else (context_layer,)


def _fused_bias_qkv(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``qkv(x)`` with timm's separate q, k, v biases, as BEiT and SwinV2 apply them."""
    if attn.q_bias is None:
        return attn.qkv(x)
    qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    if attn.qkv_bias_separate:
        return attn.qkv(x) + qkv_bias
    return F.linear(x, weight=attn.qkv.weight, bias=qkv_bias)


class HeadPrunedBeitAttention(BeitAttention):
    """timm's BEiT ``Attention`` whose heads' output keeps the heads' width before ``proj``."""

    def forward(self, x: torch.Tensor, shared_rel_pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        batch_size, num_tokens, _ = x.shape
        qkv = _fused_bias_qkv(self, x).reshape(batch_size, num_tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # batch, heads, tokens, head_dim

        own_bias = self._get_rel_pos_bias() if self.relative_position_bias_table is not None else None
        if self.fused_attn:
            biases = [b for b in (own_bias, shared_rel_pos_bias) if b is not None]
            dropout = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=sum(biases) if biases else None, dropout_p=dropout)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            for bias in (own_bias, shared_rel_pos_bias):  # added one after the other, as timm does
                if bias is not None:
                    attn = attn + bias
            x = self.attn_drop(attn.softmax(dim=-1)) @ v

        x = x.transpose(1, 2).reshape(batch_size, num_tokens, self.proj.in_features)
        return self.proj_drop(self.proj(x))


class HeadPrunedWindowAttentionV2(WindowAttentionV2):
    """timm's SwinV2 ``WindowAttention`` whose heads' output keeps the heads' width before ``proj``."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch_windows, num_tokens, _ = x.shape
        qkv = _fused_bias_qkv(self, x).reshape(batch_windows, num_tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        # torch-pruning counts an unbind's pieces by their consumers (q and k have two each in
        # normalize): a free view gives each piece one, so the heads trace to proj.
        q, k, v = (piece.view_as(piece) for piece in qkv.unbind(0))

        # Cosine attention, plus the bias the continuous position MLP gives every head.
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()
        window_area = self.window_size[0] * self.window_size[1]
        bias_table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = bias_table[self.relative_position_index.view(-1)].view(window_area, window_area, -1).permute(2, 0, 1)
        attn = attn + 16 * torch.sigmoid(bias.contiguous()).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, self.num_heads, num_tokens, num_tokens) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, num_tokens, num_tokens)
        attn = self.attn_drop(self.softmax(attn))

        x = (attn @ v).transpose(1, 2).reshape(batch_windows, num_tokens, self.proj.in_features)
        return self.proj_drop(self.proj(x))


class HeadPrunedMetaFormerAttention(MetaFormerAttention):
    """timm's MetaFormer (CAFormer) ``Attention`` whose heads' output keeps the heads' width before ``proj``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, num_tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch_size, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(batch_size, num_tokens, self.proj.in_features)
        return self.proj_drop(self.proj(x))


class HeadPrunedPvtV2Attention(PvtV2Attention):
    """timm's PVTv2 ``Attention`` whose heads' output keeps the heads' width before ``proj``."""

    def forward(self, x: torch.Tensor, feat_size: list[int]) -> torch.Tensor:
        batch_size, num_tokens, width = x.shape
        q = self.q(x).reshape(batch_size, num_tokens, self.num_heads, -1).permute(0, 2, 1, 3)
        if self.pool is not None or self.sr is not None:  # keys and values from a reduced map
            x = x.permute(0, 2, 1).reshape(batch_size, width, *feat_size)
            x = self.sr(self.pool(x) if self.pool is not None else x).reshape(batch_size, width, -1).permute(0, 2, 1)
            x = self.norm(x)
            if self.act is not None:
                x = self.act(x)
        kv = self.kv(x).reshape(batch_size, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(batch_size, num_tokens, self.proj.in_features)
        return self.proj_drop(self.proj(x))


_HEAD_PRUNED_TIMM_ATTENTION = {
    BeitAttention: HeadPrunedBeitAttention,
    WindowAttentionV2: HeadPrunedWindowAttentionV2,
    MetaFormerAttention: HeadPrunedMetaFormerAttention,
    PvtV2Attention: HeadPrunedPvtV2Attention,
}
"""timm attention classes whose forward reshapes the heads' output to the input width -> the fixed class."""


def _input_width(attn: nn.Module) -> int:
    """The width of the residual stream ``attn`` reads (its first head projection's input)."""
    return (attn.q if isinstance(attn, PvtV2Attention) else attn.qkv).in_features


class StreamPrunedFocalNetModulation(FocalNetModulation):
    """``FocalNetModulation`` splitting ``projection_in``'s output by its query and context widths."""

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        x = self.projection_in(hidden_state).permute(0, 3, 1, 2).contiguous()
        widths = (self.projection_context.out_channels, self.projection_context.in_channels, self.focal_level + 1)
        q, ctx, gates = torch.split(x, widths, 1)

        ctx_all = 0
        for level in range(self.focal_level):
            ctx = self.focal_layers[level](ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_global = self.activation(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)

        x_out = (q * self.projection_context(ctx_all)).permute(0, 2, 3, 1).contiguous()
        if self.use_post_layernorm_in_modulation:
            x_out = self.layernorm(x_out)
        return self.projection_dropout(self.projection_out(x_out))


class StreamPrunedHieraLayer(HieraLayer):
    """``HieraLayer`` that runs its skip projection whenever it has one, viewed by that projection's width."""

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, ...]:
        batch_size = hidden_states.shape[0]
        hidden_states_norm = self.layernorm_before(hidden_states)
        hidden_states = self.proj(hidden_states_norm)
        # Refer to transformers' unroll: a max-pool over the query stride.
        hidden_states = hidden_states.view(batch_size, self.query_stride, -1, self.proj.out_features).max(dim=1).values

        hidden_states_norm, attn_weights = self.attn(hidden_states_norm, output_attentions=output_attentions)
        hidden_states = hidden_states + self.drop_path(hidden_states_norm)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, attn_weights


def fix_forwards(model: nn.Module) -> None:
    """Fix the modules of ``model`` whose forward would read a width pruning changed (idempotent)."""
    for m in model.modules():
        if type(m) in _HEAD_PRUNED_TIMM_ATTENTION and m.proj.in_features != _input_width(m):
            m.__class__ = _HEAD_PRUNED_TIMM_ATTENTION[type(m)]
        elif isinstance(m, PvtV2SelfAttention) and m.all_head_size != m.hidden_size:
            m.__class__ = HeadPrunedPvtV2SelfAttention
        elif isinstance(m, FocalNetModulation) and m.projection_in.in_features != m.projection_context.out_channels:
            m.__class__ = StreamPrunedFocalNetModulation
        elif isinstance(m, FocalNetPatchEmbeddings):
            m.num_channels = m.projection.in_channels
        elif isinstance(m, HieraLayer) and hasattr(m, "proj") and m.proj.out_features != m.hidden_size_output:
            m.__class__ = StreamPrunedHieraLayer
