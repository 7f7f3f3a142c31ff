"""PVTv2's self-attention (transformers) with fewer heads than its input width.

transformers' ``PvtV2SelfAttention.forward`` reshapes the heads' output to the width of its
input, which only holds while every head is there. A head-pruned module gets this subclass,
whose forward reshapes to the heads' own width (``all_head_size``); everything else, and the
output of an unpruned module, is unchanged. The class is set again on reload, when the head
counts are synced (see ``attention.py``), so nothing beyond the weights and the shape spec is
saved.
"""

from __future__ import annotations

import math

import torch
from torch import nn
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


def sync_pvt_v2_class(attn: nn.Module) -> None:
    """Give a PVTv2 self-attention with fewer heads than its input width the forward that allows it."""
    if attn.all_head_size != attn.hidden_size:
        attn.__class__ = HeadPrunedPvtV2SelfAttention
