"""Architecture patterns of the coverage sweep that need more than torch-pruning's groups, at tiny sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.beit import Attention as BeitAttention
from timm.models.ghostnet import GhostModuleV2
from timm.models.metaformer import Attention as MetaFormerAttention
from timm.models.metaformer import LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, SepConv
from timm.models.pvt_v2 import Attention as PvtV2Attention
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2
from torch import nn

from hf_prune import AutoPrunedModel, ModelSource, save_pretrained
from hf_prune.structure import (
    MacsModel,
    StructureGraph,
    count_macs_params,
    select_lowest,
    unit_saliency,
)
from hf_prune.structure.forward_fixes import (
    HeadPrunedBeitAttention,
    HeadPrunedMetaFormerAttention,
    HeadPrunedPvtV2Attention,
    HeadPrunedWindowAttentionV2,
)


def _prune_to_half_and_reload(build, rebuild) -> StructureGraph:
    """Prune ``build()`` to 50 % MACs under the default 25 % floor; check counted MACs and the shape-spec reload."""
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(2, 3, 64, 64)
    graph = StructureGraph(model, x[:1])
    macs_model = MacsModel(graph, x[:1])
    scores = {g.name: unit_saliency(model, g) for g in graph.groups}
    selection = select_lowest(graph.groups, scores, macs_model, 0.5, max_prune_ratio=0.75)

    graph.apply(selection.keep)

    reached = 1 - count_macs_params(model, x[:1])[0] / macs_model.base_macs
    assert 0.5 <= reached < 0.51
    assert reached == pytest.approx(selection.reduction, abs=1e-9)  # the analytic MACs are exact
    assert model(x).shape == (2, 10)
    with torch.no_grad():
        assert torch.equal(rebuild(model, build)(x), model(x))
    return graph


def test_ghost_modules_lose_a_channel_with_its_cheap_copy(rebuild):
    """A ghost module concatenates channels and their depthwise copies: a unit removes a channel and its copy."""
    def build():
        return timm.create_model("ghostnet_050", num_classes=10)

    torch.manual_seed(0)
    graph = StructureGraph(build().eval(), torch.randn(1, 3, 64, 64))
    # blocks.1.0.conv_dw reads ghost1's concatenation of 12 primary channels and their 12 copies.
    group = next(g for g in graph.groups if g.name == "blocks.1.0.conv_dw")
    slices = {s.param_name: s for s in group.slices}
    assert group.num_units == 12
    assert slices["blocks.1.0.conv_dw.weight"].index[3].tolist() == [3, 15]
    assert slices["blocks.1.0.ghost1.primary_conv.0.weight"].index[3].tolist() == [3]
    assert slices["blocks.1.0.ghost1.cheap_operation.0.weight"].index[3].tolist() == [3]

    _prune_to_half_and_reload(build, rebuild)


class _GatedGhost(nn.Module):
    """GhostNetV2's module: the concatenation, cut to its width, times a gate from a side branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.ghost = GhostModuleV2(16, 32)
        self.conv = nn.Conv2d(32, 24, 3, padding=1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.ghost(self.stem(x))).mean((2, 3)))


def test_gated_ghost_module_loses_a_channel_with_its_copy_and_gate(rebuild):
    torch.manual_seed(0)
    model, x = _GatedGhost().eval(), torch.randn(2, 3, 16, 16)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if any(s.param_name == "conv.weight" and s.dim == 1 for s in g.slices))
    slices = {(s.param_name, s.dim): s for s in group.slices}
    assert group.num_units == 16
    assert slices[("conv.weight", 1)].index[5].tolist() == [5, 21]
    assert slices[("ghost.short_conv.4.weight", 0)].index[5].tolist() == [5, 21]  # the gate's two channels
    keep = {g.name: list(range(1, g.num_units, 2)) for g in graph.groups}

    graph.apply(keep)

    assert model.conv.in_channels == 16 and model(x).shape == (2, 10)
    with torch.no_grad():
        assert torch.equal(rebuild(model, _GatedGhost)(x), model(x))


def _tiny_beit() -> nn.Module:
    return timm.create_model("beit_base_patch16_224", img_size=64, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def _tiny_swinv2() -> nn.Module:
    return timm.create_model("swinv2_tiny_window8_256", img_size=64, window_size=4, depths=(1, 1, 1, 1),
                             embed_dim=48, num_classes=10)


def _tiny_caformer() -> nn.Module:
    return MetaFormer(depths=(1, 1, 1, 1), dims=(16, 32, 128, 128), num_classes=10,
                      token_mixers=(SepConv, SepConv, MetaFormerAttention, MetaFormerAttention),
                      norm_layers=(LayerNorm2dNoBias, LayerNorm2dNoBias, LayerNormNoBias, LayerNormNoBias))


def _tiny_pvt_v2() -> nn.Module:
    return PyramidVisionTransformerV2(depths=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 4),
                                      num_classes=10)


def _value_rows(attention: nn.Module, head: int) -> list[tuple[torch.Tensor, slice]]:
    """The value weight rows and biases of one head: zeroed, the head adds nothing to the output."""
    if isinstance(attention, PvtV2Attention):  # kv laid out as (k | v, num_heads, head_dim)
        rows = slice(attention.q.out_features + head * attention.head_dim,
                     attention.q.out_features + (head + 1) * attention.head_dim)
        return [(attention.kv.weight, rows), (attention.kv.bias, rows)]
    width = attention.qkv.out_features // 3  # qkv laid out as (q | k | v, num_heads, head_dim)
    head_dim = width // attention.num_heads
    rows = slice(2 * width + head * head_dim, 2 * width + (head + 1) * head_dim)
    biases = [(attention.v_bias, slice(head * head_dim, (head + 1) * head_dim))] if hasattr(attention, "v_bias") else []
    return [(attention.qkv.weight, rows), *biases]


def _randomized(model: nn.Module) -> nn.Module:
    """Random q/v biases and temperatures (timm starts them at constants), so slicing them by head shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_bias", "v_bias", "logit_scale")):
                p.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize(("build", "attention_name", "projection"), [
    (_tiny_beit, "blocks.1.attn", "qkv"),
    (_tiny_swinv2, "layers.2.blocks.0.attn", "qkv"),
    (_tiny_caformer, "stages.2.blocks.0.token_mixer", "qkv"),
    (_tiny_pvt_v2, "stages.2.blocks.0.attn", "kv"),
])
def test_reshaping_attention_head_removal_equals_silencing_it(build, attention_name, projection):
    """timm's BEiT, SwinV2 (q/v biases added by hand), CAFormer and PVTv2 reshape heads to the input width:
    a head still goes whole."""
    model, x = _randomized(build()), torch.randn(2, 3, 64, 64)
    attention = model.get_submodule(attention_name)
    num_heads, heads_width = attention.num_heads, attention.proj.in_features
    head_dim = heads_width // num_heads
    with torch.no_grad():
        silenced = build().eval()
        silenced.load_state_dict(model.state_dict())
        for tensor, rows in _value_rows(silenced.get_submodule(attention_name), head=1):
            tensor[rows] = 0
        expected = silenced(x)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.name == f"{attention_name}.{projection}")
    assert group.kind == "head" and group.num_units == num_heads
    kept = [h for h in range(num_heads) if h != 1]

    graph.apply({group.name: kept})

    assert type(attention).__name__.startswith("HeadPruned")
    assert attention.num_heads == num_heads - 1 and attention.proj.in_features == heads_width - head_dim
    if getattr(attention, "q_bias", None) is not None:
        assert attention.q_bias.shape == attention.k_bias.shape == attention.v_bias.shape == (heads_width - head_dim,)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    # The fixed class is still known: a second prune finds the remaining heads.
    again = StructureGraph(model, x[:1])
    assert next(g for g in again.groups if g.name == group.name).num_units == num_heads - 1


@pytest.mark.parametrize(("build", "fused_attn"), [
    (_tiny_beit, True), (_tiny_beit, False), (_tiny_swinv2, None), (_tiny_caformer, True), (_tiny_caformer, False),
    (_tiny_pvt_v2, True), (_tiny_pvt_v2, False),
])
def test_fixed_reshaping_forwards_equal_timm_on_unpruned_modules(build, fused_attn):
    """The head-pruned classes compute exactly what timm's do while every head is there (SDPA or not)."""
    model, x = _randomized(build()), torch.randn(2, 3, 64, 64)
    fixed = {BeitAttention: HeadPrunedBeitAttention, WindowAttentionV2: HeadPrunedWindowAttentionV2,
             MetaFormerAttention: HeadPrunedMetaFormerAttention, PvtV2Attention: HeadPrunedPvtV2Attention}
    attentions = [m for m in model.modules() if type(m) in fixed]
    if fused_attn is not None:
        for m in attentions:
            m.fused_attn = fused_attn
    with torch.no_grad():
        expected = model(x)
        for m in attentions:
            m.__class__ = fixed[type(m)]
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("build", [_tiny_beit, _tiny_swinv2, _tiny_caformer, _tiny_pvt_v2])
def test_reshaping_attention_prunes_to_half_and_reloads(build, rebuild):
    graph = _prune_to_half_and_reload(lambda: _randomized(build()), rebuild)
    assert any(g.kind == "head" for g in graph.groups)


def test_head_pruned_swinv2_reloads_from_disk(tmp_path):
    """timm's SwinV2 computes its position tables on its parameters' device: on meta they come from a CPU rebuild."""
    model, x = _randomized(_tiny_swinv2()), torch.randn(2, 3, 64, 64)
    source = ModelSource.from_model(model)
    graph = StructureGraph(model, x[:1])
    graph.apply({g.name: list(range(0, g.num_units, 2)) for g in graph.groups if g.kind == "head"})
    save_pretrained(model, tmp_path, source=source)

    reloaded = AutoPrunedModel.from_pretrained(tmp_path).eval()

    attention = reloaded.layers[3].blocks[0].attn
    assert type(attention) is HeadPrunedWindowAttentionV2 and attention.num_heads == 12
    assert not attention.relative_coords_table.is_meta and not attention.relative_coords_table.isnan().any()
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
