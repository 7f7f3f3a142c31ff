"""Structure engine: groups, physical pruning, analytic MACs and shape spec over a model zoo."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models import mlp_mixer
from torch import nn
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    CvtConfig,
    CvtForImageClassification,
    FocalNetConfig,
    FocalNetForImageClassification,
    HieraConfig,
    HieraForImageClassification,
    LevitConfig,
    LevitForImageClassification,
    PvtV2Config,
    PvtV2ForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    Swinv2Config,
    Swinv2ForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

import hf_prune  # noqa: F401  (registers the CIFAR models)
from hf_prune.structure import (
    MacsModel,
    ShapeSpecError,
    StructureGraph,
    UnprunableLayerError,
    UnreachableTargetError,
    apply_shape_spec,
    count_macs_params,
    export_shape_spec,
    mask_units,
    select_lowest,
    unit_output_masks,
    unit_saliency,
)
from hf_prune.structure.forward_fixes import StreamPrunedFocalNetModulation, StreamPrunedHieraLayer


def _timm(name: str, size: int):
    return lambda: timm.create_model(name, num_classes=10), size


ZOO = {
    "cifar_resnet20": _timm("cifar_resnet20", 32),
    "cifar_resnet56": _timm("cifar_resnet56", 32),
    "cifar_vgg16": _timm("cifar_vgg16", 32),
    "resnet18": _timm("resnet18", 64),
    "resnet50": _timm("resnet50", 64),
    "mobilenetv3_small_100": _timm("mobilenetv3_small_100", 64),
    "efficientnet_b0": _timm("efficientnet_b0", 64),
    "convnext_atto": _timm("convnext_atto", 64),
    "resnext26ts": _timm("resnext26ts", 64),
    "swin": (
        lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, img_size=64, window_size=4,
                                  depths=(1, 1, 1, 1), embed_dim=32),
        64,
    ),
    "vit_tiny_patch16_224": _timm("vit_tiny_patch16_224", 224),
    "deit_tiny_patch16_224": _timm("deit_tiny_patch16_224", 224),
    "tiny_vit_5m_224": _timm("tiny_vit_5m_224", 64),
    "hf_vit": (
        lambda: ViTForImageClassification(
            ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, num_labels=10)
        ),
        32,
    ),
    "hf_swin": (
        lambda: SwinForImageClassification(
            SwinConfig(image_size=64, patch_size=2, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                       window_size=4, num_labels=10)
        ),
        64,
    ),
    "hf_swinv2": (
        lambda: Swinv2ForImageClassification(
            Swinv2Config(image_size=64, patch_size=2, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                         window_size=4, num_labels=10)
        ),
        64,
    ),
    "hf_pvt_v2": (
        lambda: PvtV2ForImageClassification(
            PvtV2Config(image_size=64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                        num_attention_heads=[1, 2, 2, 4], num_labels=10)
        ),
        64,
    ),
    "hf_resnet": (
        lambda: ResNetForImageClassification(
            ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10)
        ),
        64,
    ),
    "hf_cvt": (
        lambda: CvtForImageClassification(
            # depth[i] > i: transformers indexes the drop-path rates by stage
            CvtConfig(embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3], num_labels=10)
        ),
        32,
    ),
    "hf_focalnet": (
        lambda: FocalNetForImageClassification(
            FocalNetConfig(image_size=32, embed_dim=16, depths=[1, 1], hidden_sizes=[16, 32], num_labels=10)
        ),
        32,
    ),
    "hf_hiera": (
        lambda: HieraForImageClassification(
            HieraConfig(image_size=[64, 64], embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], num_labels=10)
        ),
        64,
    ),
    "hf_convnext": (
        lambda: ConvNextForImageClassification(
            ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10)
        ),
        64,
    ),
}


def _logits(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def _build(name: str):
    torch.manual_seed(0)
    build, size = ZOO[name]
    return build().eval(), build, torch.randn(2, 3, size, size)


def _half_plan(graph: StructureGraph) -> dict[str, list[int]]:
    """Keep every second unit of every group (not a prefix, so index bookkeeping is exercised)."""
    return {g.name: list(range(1, g.num_units, 2)) or [0] for g in graph.groups}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_half_plan_prunes_physically_and_round_trips(name):
    model, build, x = _build(name)
    graph = StructureGraph(model, x[:1])
    assert graph.groups, "every zoo model has prunable groups"
    macs_model = MacsModel(graph, x[:1])
    macs_before, params_before = count_macs_params(model, x[:1])
    assert macs_model.base_macs == macs_before
    plan = _half_plan(graph)
    predicted = macs_model.macs({g.name: g.num_units - len(plan[g.name]) for g in graph.groups})

    graph.apply(plan)

    macs_after, params_after = count_macs_params(model, x[:1])
    assert macs_after < 0.75 * macs_before and params_after < params_before
    assert abs(predicted - macs_after) / macs_after < 0.01
    out = _logits(model(x))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters() if p.requires_grad)

    # The shape spec rebuilds the slim model from a fresh original: strict load, same outputs.
    fresh = build().eval()
    spec = json.loads(json.dumps(export_shape_spec(model, reference=fresh)))
    apply_shape_spec(fresh, spec)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(_logits(fresh(x)), _logits(model(x)))


def test_classifier_output_and_residual_stream_are_never_pruned():
    model, _, x = _build("vit_tiny_patch16_224")
    graph = StructureGraph(model, x[:1])
    touched = {m for g in graph.groups for m in g.modules}
    assert "head" not in touched and "patch_embed.proj" not in touched and "norm" not in touched
    assert {g.kind for g in graph.groups} == {"head", "channel"}
    assert len(graph.groups) == 24  # 12 blocks x (heads, MLP hidden)


def test_group_feeding_the_classifier_is_pruned_by_slicing_its_input_columns():
    model, _, x = _build("cifar_resnet20")
    graph = StructureGraph(model, x[:1])
    feeding = [g for g in graph.groups if "fc" in g.modules]
    assert len(feeding) == 1 and "layer3.2.conv2" in feeding[0].modules  # the last stage's residual stream
    fc_slices = [(s.dim, s.produces) for s in feeding[0].slices if s.param_name.startswith("fc.")]
    assert fc_slices == [(1, False)]  # input columns only: the classes (rows, bias) stay
    keep = list(range(1, 64, 2))
    columns = model.fc.weight.detach()[:, keep].clone()
    graph.apply({feeding[0].name: keep})
    assert model.fc.weight.shape == (10, 32) and torch.equal(model.fc.weight, columns)
    assert model.fc.bias.shape == (10,) and model(x).shape == (2, 10)


def test_removing_a_head_equals_zeroing_its_value_rows():
    """Physically removing head h gives the output the dense model gives with head h silenced."""
    model, _, x = _build("vit_tiny_patch16_224")
    attn = model.blocks[0].attn
    dim, head_dim = attn.qkv.in_features, attn.head_dim
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=10).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        v_rows = slice(2 * dim + 1 * head_dim, 2 * dim + 2 * head_dim)  # value rows of head 1
        reference.blocks[0].attn.qkv.weight[v_rows] = 0
        reference.blocks[0].attn.qkv.bias[v_rows] = 0
        expected = reference(x)

    graph = StructureGraph(model, x[:1])
    graph.apply({"blocks.0.attn.qkv": [0, 2]})

    assert (attn.num_heads, attn.attn_dim, attn.qkv.out_features) == (2, 2 * head_dim, 6 * head_dim)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_hf_vit_head_counts_follow_the_prune():
    model, _, x = _build("hf_vit")
    graph = StructureGraph(model, x[:1])
    head_groups = [g for g in graph.groups if g.kind == "head"]
    assert [g.num_units for g in head_groups] == [4, 4]
    graph.apply({head_groups[0].name: [1, 3]})
    attention = model.vit.layers[0].attention
    assert attention.num_attention_heads == 2 and attention.q_proj.out_features == 2 * attention.head_dim


def test_hf_hiera_prunes_heads_and_the_last_stream_past_its_skip_projection():
    """Hiera's stage-opening layer skipped its projection once the stored widths agreed: a pruned one does not."""
    model, build, x = _build("hf_hiera")
    fixed = build().eval()  # the fixed forward computes what transformers' does while the widths still agree
    fixed.load_state_dict(model.state_dict())
    for stage in fixed.hiera.encoder.stages[1:]:
        stage.layers[0].__class__ = StreamPrunedHieraLayer
    with torch.no_grad():
        torch.testing.assert_close(fixed(x).logits, model(x).logits, rtol=0, atol=0)
    graph = StructureGraph(model, x[:1])
    head_groups = [g for g in graph.groups if g.kind == "head"]
    assert [g.num_units for g in head_groups] == [4, 2, 2, 1]
    # The last stage's stream feeds no attention: it is pruned, down to its input width (64) and below.
    stream = next(g for g in graph.groups if "hiera.encoder.stages.3.layers.0.proj" in g.modules)
    assert stream.kind == "channel" and stream.num_units == 128

    graph.apply({head_groups[0].name: [2], stream.name: list(range(0, 128, 2))})

    attention = model.hiera.encoder.stages[3].layers[0].attn
    assert (attention.num_heads, attention.qkv.out_features) == (1, 3 * attention.head_dim)
    assert attention.hidden_size_output == attention.head_dim == attention.proj.in_features
    layer = model.hiera.encoder.stages[3].layers[0]
    assert type(layer).__name__ == "StreamPrunedHieraLayer" and layer.proj.out_features == layer.proj.in_features == 64
    assert model(x).logits.shape == (2, 10)


def test_hf_cvt_traces_past_its_class_token_split_and_prunes_heads():
    """CvT splits its class token off and concatenates it to q, k, v: torch-pruning's size inference overran."""
    model, _, x = _build("hf_cvt")
    graph = StructureGraph(model, x[:1])
    assert [g.num_units for g in graph.groups if g.kind == "head"] == [1, 2, 2, 3, 3, 3]
    last = graph.groups[-2]
    assert last.kind == "head" and last.name.startswith("cvt.encoder.stages.2.layers.2.")
    graph.apply({last.name: [0, 2]})
    attention = model.cvt.encoder.stages[2].layers[2].attention
    assert (attention.attention.num_heads, attention.attention.embed_dim) == (2, 32)
    assert attention.output.dense.in_features == 32
    assert model(x).logits.shape == (2, 10)


def test_hf_pvt_v2_head_removal_equals_silencing_it():
    """PVTv2's forward reshapes the heads' output to the input width; a head-pruned one gets a forward that does not."""
    model, build, x = _build("hf_pvt_v2")
    attention = model.pvt_v2.encoder.layers[3].blocks[0].attention
    head_dim = attention.attention_head_size
    with torch.no_grad():
        silenced = build().eval()
        silenced.load_state_dict(model.state_dict())
        value = silenced.pvt_v2.encoder.layers[3].blocks[0].attention.value
        value.weight[head_dim:2 * head_dim] = 0
        value.bias[head_dim:2 * head_dim] = 0
        expected = silenced(x).logits
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.name.startswith("pvt_v2.encoder.layers.3.blocks.0.attention."))
    assert group.kind == "head" and group.num_units == 4

    graph.apply({group.name: [0, 2, 3]})

    assert type(attention).__name__ == "HeadPrunedPvtV2SelfAttention"
    assert (attention.num_attention_heads, attention.all_head_size, attention.proj.in_features) == (3, 3 * head_dim,
                                                                                                    3 * head_dim)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, expected, rtol=1e-4, atol=1e-5)


def test_index_maps_trace_every_kept_element():
    model, _, x = _build("cifar_resnet20")
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    old_weight = conv.weight.detach().clone()
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if any(s.param_name.endswith(".weight") and s.produces and s.dim == 0
                                                 and s.index.shape[1] == 1 for s in g.slices))
    weight_name = next(n for n, p in model.named_parameters() if p is conv.weight)
    keep = list(range(0, group.num_units, 3))
    maps = graph.apply({group.name: keep})
    new_weight = dict(model.named_parameters())[weight_name]
    assert torch.equal(new_weight.detach(), old_weight.flatten()[maps[weight_name].flatten()].view(new_weight.shape))


@pytest.mark.parametrize("fan_power", [1.0, 0.5])
def test_unit_saliency_matches_a_hand_count(fan_power):
    model, _, x = _build("cifar_resnet20")
    graph = StructureGraph(model, x[:1])
    group = graph.groups[0]
    params = dict(model.named_parameters())
    expected = torch.zeros(group.num_units)
    weights = [s for s in group.slices if not s.param_name.endswith("bias")]
    for s in weights:
        w = params[s.param_name].detach().movedim(s.dim, 0)
        for unit in range(group.num_units):
            channel = w[s.index[unit]]
            expected[unit] += channel.pow(2).sum() / w[0].numel() ** fan_power
    torch.testing.assert_close(unit_saliency(model, group, fan_power), expected / len(weights))


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_selection_hits_the_target_on_the_real_model(target):
    model, _, x = _build("cifar_resnet56")
    graph = StructureGraph(model, x[:1])
    macs_model = MacsModel(graph, x[:1])
    scores = {g.name: unit_saliency(model, g) for g in graph.groups}
    selection = select_lowest(graph.groups, scores, macs_model, target, max_prune_ratio=0.8)
    graph.apply(selection.keep)
    real = 1 - count_macs_params(model, x[:1])[0] / macs_model.base_macs
    assert target <= real < target + 0.005
    assert real == pytest.approx(selection.reduction, abs=1e-9)


def test_unreachable_target_names_the_limit():
    model, _, x = _build("cifar_resnet20")
    graph = StructureGraph(model, x[:1])
    scores = {g.name: unit_saliency(model, g) for g in graph.groups}
    with pytest.raises(UnreachableTargetError, match="layer_prune_limit"):
        select_lowest(graph.groups, scores, MacsModel(graph, x[:1]), 0.95, max_prune_ratio=0.5)


class _Unsupported(nn.Module):
    """Conv features attended over by nn.MultiheadAttention, a layer the engine cannot slice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.mixer = nn.MultiheadAttention(8, num_heads=2, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(self.mixer(tokens, tokens, tokens)[0].mean(1))


def test_unknown_layer_in_a_group_is_named_with_the_fix():
    model = _Unsupported().eval()
    with pytest.raises(UnprunableLayerError, match=r"'mixer'.*ignored_layers=\['mixer'\]"):
        StructureGraph(model, torch.randn(1, 3, 16, 16))
    graph = StructureGraph(model, torch.randn(1, 3, 16, 16), ignored_layers=["mixer"])
    assert all("conv" not in g.modules for g in graph.groups)


def test_ignored_layers_must_exist():
    model, _, x = _build("cifar_resnet20")
    with pytest.raises(ValueError, match="no_such_layer"):
        StructureGraph(model, x[:1], ignored_layers=["no_such_layer"])


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda spec: spec["modules"].update({"../../etc": spec["modules"].popitem()[1]}), "does not have"),
        (lambda spec: next(iter(spec["modules"].values())).update(out_channels=0), "sizes"),
        (lambda spec: next(iter(spec["modules"].values())).update(out_channels=10_000), "sizes"),
        (lambda spec: spec.update(format="pickle"), "format"),
    ],
)
def test_bad_shape_specs_are_refused(corrupt, message):
    model, build, x = _build("cifar_resnet20")
    graph = StructureGraph(model, x[:1])
    graph.apply(_half_plan(graph))
    spec = export_shape_spec(model, reference=build())
    corrupt(spec)
    with pytest.raises(ShapeSpecError, match=message):
        apply_shape_spec(build(), spec)


def test_grouped_convolutions_lose_whole_groups():
    """Removing one group of a grouped conv equals zeroing its channels; groups and the spec follow."""
    model, build, x = _build("resnext26ts")
    graph = StructureGraph(model, x[:1])
    modules = dict(model.named_modules())
    def grouped_conv(group):
        return next((m for m in group.modules if isinstance(modules[m], nn.Conv2d) and modules[m].groups > 1), None)

    group = next(g for g in graph.groups if grouped_conv(g))
    conv_name = grouped_conv(group)
    conv = modules[conv_name]
    groups, per_group = conv.groups, conv.out_channels // conv.groups
    assert group.num_units == groups
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [1])):
        expected = model(x)

    graph.apply({group.name: [u for u in range(groups) if u != 1]})

    kept_width = (groups - 1) * per_group
    assert (conv.groups, conv.in_channels, conv.out_channels) == (groups - 1, kept_width, kept_width)
    assert conv.weight.shape[:2] == (conv.out_channels, per_group)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    spec = export_shape_spec(model, reference=build())
    assert spec["modules"][conv_name]["groups"] == groups - 1


@pytest.mark.parametrize("name", ["swin", "hf_swin"])
def test_window_attention_heads_take_their_relative_position_bias_along(name):
    """Removing a Swin head equals silencing its value rows; its bias-table column goes with it."""
    model, _, x = _build(name)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.kind == "head" and g.num_units >= 2)
    table = next(s for s in group.slices if s.param_name.endswith("relative_position_bias_table"))
    values = next(s for s in group.slices if s.produces and s.param_name.endswith(("qkv.weight", "v_proj.weight")))
    rows = values.index[1]  # head 1's rows: q, k and v for a fused qkv
    value_rows = rows[-len(rows) // 3:] if values.param_name.endswith("qkv.weight") else rows
    params = dict(model.named_parameters())
    with torch.no_grad():
        saved = params[values.param_name].clone()
        params[values.param_name][value_rows] = 0
        expected = _logits(model(x))
        params[values.param_name].copy_(saved)
    heads = params[table.param_name].shape[-1]

    graph.apply({group.name: [u for u in range(group.num_units) if u != 1]})

    assert dict(model.named_parameters())[table.param_name].shape[-1] == heads - 1
    with torch.no_grad():
        torch.testing.assert_close(_logits(model(x)), expected, rtol=1e-4, atol=1e-5)


def test_cosine_attention_heads_take_their_scale_and_bias_mlp_rows_along(rebuild):
    """Swinv2: removing a head equals silencing it; its logit scale and bias-MLP output row go with it."""
    model, build, x = _build("hf_swinv2")
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.kind == "head" and g.num_units == 4)
    attention = model.get_submodule(group.name.rpartition(".")[0])
    bias_mlp_output = attention.continuous_position_bias_mlp[2]
    scale, bias_rows = attention.logit_scale.detach().clone(), bias_mlp_output.weight.detach().clone()
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [1])):
        expected = _logits(model(x))

    graph.apply({group.name: [0, 2, 3]})

    assert attention.num_attention_heads == 3 and bias_mlp_output.out_features == 3
    torch.testing.assert_close(attention.logit_scale.detach(), scale[[0, 2, 3]])
    torch.testing.assert_close(bias_mlp_output.weight.detach(), bias_rows[[0, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(_logits(model(x)), expected, rtol=1e-4, atol=1e-5)
    reloaded = rebuild(model, build)
    with torch.no_grad():
        torch.testing.assert_close(_logits(reloaded(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, size, kwargs", [
    ("tiny_vit_5m_224", 64, {}),
    ("levit_128s", 64, {"img_size": 64}),
    # Attention biases fixed to a 7x7 grid: full input size, tiny widths.
    ("efficientformer_l1", 224, {"depths": (1, 1, 1, 2), "embed_dims": (16, 16, 16, 64), "num_vit": 1}),
])
def test_heads_split_into_q_k_v_take_their_biases_and_output_columns_along(name, size, kwargs, rebuild):
    """TinyViT, LeViT, EfficientFormer: qkv rows per head are (q, k, v); removing a head equals silencing it."""
    torch.manual_seed(0)

    def build():
        return timm.create_model(name, num_classes=10, **kwargs).eval()

    model, x = build(), torch.randn(2, 3, size, size)
    graph = StructureGraph(model, x[:1])  # LeViT's downsampling attention, of another kind, is kept whole
    group = next(g for g in graph.groups if g.kind == "head" and g.num_units >= 4)
    attention = model.get_submodule(group.name.split(".qkv")[0])
    biases, heads = attention.attention_biases.detach().clone(), attention.num_heads
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [1])):
        expected = model(x)
    kept = [h for h in range(heads) if h != 1]

    graph.apply({group.name: kept})

    assert attention.num_heads == heads - 1
    projection = model.get_submodule(group.name)  # qkv, or LeViT's qkv.linear
    assert projection.out_features == (heads - 1) * (2 * attention.key_dim + attention.val_dim)
    torch.testing.assert_close(attention.attention_biases.detach(), biases[kept])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    reloaded = rebuild(model, build)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), expected, rtol=1e-4, atol=1e-5)


def _tiny_cait() -> nn.Module:
    return timm.create_model("cait_xxs24_224", num_classes=4, img_size=32, patch_size=16, embed_dim=32, depth=1,
                             depth_token_only=1, num_heads=2)


def test_attention_of_an_unknown_family_is_kept_whole_and_the_rest_pruned(make_trainer, tmp_path, caplog):
    """CaiT's class and talking-heads attention are of no known family: their heads stay, a warning says so."""
    torch.manual_seed(0)
    model = _tiny_cait()
    attention_shapes = {n: p.shape for n, p in model.named_parameters() if ".attn." in n}
    trainer = make_trainer(tmp_path, model=model, max_steps=3, prune_epoch=0.25,
                           target_flops_reduction=0.15)
    with caplog.at_level("WARNING", logger="hf_prune.structure.graph"):
        trainer.train()

    assert "timm.models.cait.ClassAttn, timm.models.cait.TalkingHeadAttn" in caplog.text
    assert "kept whole" in caplog.text and "hf_prune/structure/attention.py" in caplog.text
    assert trainer.structure.kept_attention == ["blocks.0.attn", "blocks_token_only.0.attn"]
    assert trainer.pruning_events[-1]["kept_attention"] == ["blocks.0.attn", "blocks_token_only.0.attn"]
    assert 0.15 <= trainer.pruning_events[-1]["macs_reduction"] < 0.17  # its attention holds most MACs
    slim = trainer.model.eval()
    assert {n: p.shape for n, p in slim.named_parameters() if ".attn." in n} == attention_shapes
    trainer.save_model(str(tmp_path / "slim"))
    reloaded = hf_prune.AutoPrunedModel.from_pretrained(str(tmp_path / "slim")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), slim(x))


class _GainedConv(nn.Conv2d):
    """A conv with a per-output-channel ``gain`` that no layer kind slices."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3)
        self.gain = nn.Parameter(torch.rand(channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.gain, self.bias)


class _Gained(nn.Module):
    """Three convs and a classifier; ``conv2`` is ``conv_type(8)``."""

    def __init__(self, conv_type=_GainedConv) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3)
        self.conv1 = nn.Conv2d(8, 8, 3)
        self.conv2 = conv_type(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv2(self.conv1(self.conv0(x))).mean((2, 3)))


def test_layer_with_unsliced_per_channel_parameters_is_refused_with_the_fix():
    with pytest.raises(UnprunableLayerError, match=r"'conv2' \(_GainedConv\)") as info:
        StructureGraph(_Gained().eval(), torch.randn(1, 3, 16, 16))
    assert info.value.ignored_layers == ["conv2"]
    graph = StructureGraph(_Gained().eval(), torch.randn(1, 3, 16, 16), ignored_layers=["conv2"])
    assert [g.modules for g in graph.groups] == [("conv0", "conv1")]


def test_weight_standardized_conv_loses_its_gain_with_its_output_channels():
    """NFNet's ScaledStdConv2d: removing output channels equals masking them; ``gain`` follows."""
    torch.manual_seed(0)
    model = _Gained(lambda channels: timm.layers.ScaledStdConv2d(channels, channels, 3)).eval()
    with torch.no_grad():
        model.conv2.gain.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 16, 16)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.name == "conv2")
    gain = model.conv2.gain.detach().clone()
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [1, 5])):
        expected = model(x)

    kept = [0, 2, 3, 4, 6, 7]
    graph.apply({"conv2": kept})

    assert model.conv2.out_channels == 6 and model.conv2.gain.shape == (6, 1, 1, 1)
    torch.testing.assert_close(model.conv2.gain.detach(), gain[kept])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


class _RepeatedBatch(nn.Module):
    """``repeat_interleave`` over the batch (as GCViT's global query): a 5-d expand in autograd."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3)
        self.conv1 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        features = self.conv0(x).repeat_interleave(2, dim=0)
        return self.fc(self.conv1(features).mean((2, 3)))


def test_expand_is_not_read_as_grouped_query_attention():
    """torch-pruning's repeat_kv rule divided by zero here; the channels pass the expand unchanged."""
    torch.manual_seed(0)
    model, x = _RepeatedBatch().eval(), torch.randn(2, 3, 16, 16)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.name == "conv0")
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [3])):
        expected = model(x)

    graph.apply({"conv0": [u for u in range(8) if u != 3]})

    assert (model.conv0.out_channels, model.conv1.in_channels) == (7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_hf_focalnet_residual_stream_is_pruned_past_its_modulation_split():
    """FocalNet's modulation split its input projection's output by its input width; a pruned one, by its own."""
    model, build, x = _build("hf_focalnet")
    # The fixed forward computes what transformers' does while the widths still agree.
    fixed = build().eval()
    fixed.load_state_dict(model.state_dict())
    for layer in fixed.focalnet.encoder.stages:
        layer.layers[0].modulation.__class__ = StreamPrunedFocalNetModulation
    with torch.no_grad():
        torch.testing.assert_close(fixed(x).logits, model(x).logits, rtol=0, atol=0)
    graph = StructureGraph(model, x[:1])
    modulation_name = "focalnet.encoder.stages.0.layers.0.modulation"
    stream = next(g for g in graph.groups if f"{modulation_name}.projection_out" in g.modules)
    assert "focalnet.encoder.stages.0.downsample.projection" in stream.modules and stream.num_units == 16

    graph.apply({stream.name: list(range(0, 16, 2))})

    modulation = model.focalnet.encoder.stages[0].layers[0].modulation
    assert type(modulation).__name__ == "StreamPrunedFocalNetModulation"
    assert (modulation.projection_in.in_features, modulation.projection_context.out_channels) == (8, 16)
    assert model.focalnet.encoder.stages[0].downsample.num_channels == 8
    assert model(x).logits.shape == (2, 10)


@pytest.mark.parametrize("blocks", [{}, dict(block_layer=mlp_mixer.ResBlock, norm_layer=mlp_mixer.Affine, mlp_ratio=4)],
                         ids=["mlp_mixer", "resmlp"])
def test_token_mixing_linears_keep_their_shape_when_the_stream_loses_channels(blocks):
    """MLP-Mixer and ResMLP mix tokens with a Linear over the transposed stream: it is not the stream's width."""
    torch.manual_seed(0)
    model = mlp_mixer.MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=1, embed_dim=32, **blocks).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = StructureGraph(model, x[:1])
    stream = next(g for g in graph.groups if "stem.proj" in g.modules)
    params = dict(model.named_parameters())
    assert stream.num_units == 32 and not any("token" in module for module in stream.modules)
    assert all(int(s.index.max()) < params[s.param_name].shape[s.dim] for g in graph.groups for s in g.slices)
    assert unit_saliency(model, stream).shape == (32,)
    token_mixing = {n: p.detach().clone() for n, p in model.named_parameters() if "token" in n}

    graph.apply({stream.name: list(range(0, 32, 2))})

    assert model.stem.proj.out_channels == 16 and model.head.in_features == 16
    for n, p in model.named_parameters():
        if n in token_mixing:  # 16 tokens in, as before
            torch.testing.assert_close(p.detach(), token_mixing[n])
    with torch.no_grad():
        assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", ["coatnet_nano_rw_224", "maxvit_pico_rw_256"])
def test_maxxvit_attention_loses_whole_heads_with_their_bias_columns(name, rebuild):
    """CoAtNet (qkv conv) and MaxViT (qkv linear): heads go with their bias table columns; reload is equal."""
    torch.manual_seed(0)

    def build():
        return timm.create_model(name, num_classes=10, img_size=64).eval()

    model, x = build(), torch.randn(2, 3, 64, 64)
    graph = StructureGraph(model, x[:1])
    assert graph.kept_attention == []
    group = next(g for g in graph.groups if g.kind == "head" and g.num_units >= 4)
    attention = model.get_submodule(group.name.removesuffix(".qkv"))
    heads, table = attention.num_heads, attention.rel_pos.relative_position_bias_table.detach().clone()
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [1])):
        expected = model(x)
    kept = [h for h in range(heads) if h != 1]

    graph.apply({group.name: kept})

    assert attention.num_heads == heads - 1
    assert attention.qkv.weight.shape[0] == 3 * (heads - 1) * attention.dim_head
    assert attention.proj.weight.shape[1] == (heads - 1) * attention.dim_head
    torch.testing.assert_close(attention.rel_pos.relative_position_bias_table.detach(), table[:, kept])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    reloaded = rebuild(model, build)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), expected, rtol=1e-4, atol=1e-5)


def test_transformers_levit_attention_loses_whole_heads_with_their_biases(rebuild):
    """transformers' LeViT: qkv rows per head are (q, k, v), the projection reads one block per head."""
    torch.manual_seed(0)
    config = LevitConfig(image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[2, 2, 4], depths=[1, 1, 1],
                         key_dim=[8, 8, 8], num_labels=10)

    def build():
        return LevitForImageClassification(config).eval()

    model, x = build(), torch.randn(2, 3, 64, 64)
    graph = StructureGraph(model, x[:1])
    group = next(g for g in graph.groups if g.kind == "head" and g.num_units == 4)
    attention = model.get_submodule(group.name.removesuffix(".queries_keys_values.linear"))
    biases = attention.attention_biases.detach().clone()
    with torch.no_grad(), mask_units(model, unit_output_masks(model, group, [1])):
        expected = model(x).logits
    kept = [0, 2, 3]

    graph.apply({group.name: kept})

    per_head = (2 + attention.attention_ratio) * attention.key_dim
    assert attention.num_attention_heads == 3
    assert attention.queries_keys_values.linear.out_features == 3 * per_head
    assert attention.projection.linear.in_features == 3 * attention.attention_ratio * attention.key_dim
    torch.testing.assert_close(attention.attention_biases.detach(), biases[kept])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, expected, rtol=1e-4, atol=1e-5)
    reloaded = rebuild(model, build)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, expected, rtol=1e-4, atol=1e-5)
