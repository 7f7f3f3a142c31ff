"""transformers modules whose forward reads a width from its input that pruning makes differ.

Some forwards take a width that pruning changes from the input tensor or from a stored attribute,
where the pruned model needs their own layers' widths:

- PVTv2's self-attention reshapes its heads' output to its input width (fine while every head
  is there);
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
        if isinstance(m, PvtV2SelfAttention) and m.all_head_size != m.hidden_size:
            m.__class__ = HeadPrunedPvtV2SelfAttention
        elif isinstance(m, FocalNetModulation) and m.projection_in.in_features != m.projection_context.out_channels:
            m.__class__ = StreamPrunedFocalNetModulation
        elif isinstance(m, FocalNetPatchEmbeddings):
            m.num_channels = m.projection.in_channels
        elif isinstance(m, HieraLayer) and hasattr(m, "proj") and m.proj.out_features != m.hidden_size_output:
            m.__class__ = StreamPrunedHieraLayer
