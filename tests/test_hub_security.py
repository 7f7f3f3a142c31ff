"""A model directory is hostile data; a save is all or nothing; a save reloads exactly (issue 17)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import (
    CONFIG_MAPPING,
    AutoModelForImageClassification,
    CLIPConfig,
    SwinConfig,
    TimmWrapperConfig,
    ViTConfig,
    pipeline,
)

import hf_prune.hub.model_dir as model_dir_module
import hf_prune.hub.pretrained as pretrained_module
from hf_prune import AutoPrunedModel, ModelSource, StructureGraph, save_pretrained
from hf_prune.hub import PrunedModelError, PrunedModelForImageClassification
from hf_prune.hub.model_dir import write_text_atomic
from hf_prune.hub.trust import check_transformers_config
from hf_prune.models import load_model
from hf_prune.models.forward import logits_of

INPUTS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
TESTS = Path(__file__).parent


def _logits(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.logits


def _resnet(seed: int = 0, keep: int = 1) -> tuple[torch.nn.Module, ModelSource]:
    """A cifar_resnet20 with per-layer widths (``keep`` sets how many units each group loses)."""
    torch.manual_seed(seed)
    model = timm.create_model("cifar_resnet20", num_classes=10)
    source = ModelSource.from_model(model)
    graph = StructureGraph(model.eval(), INPUTS[:1])
    graph.apply({g.name: list(range(max(1, g.num_units - keep - i % 3))) for i, g in enumerate(graph.groups)})
    return model.eval(), source


def _edit_config(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.fixture
def saved_dir(tmp_path) -> Path:
    model, source = _resnet()
    save_pretrained(model, tmp_path / "model", source=source)
    return tmp_path / "model"


@pytest.fixture
def wrapper_dir(tmp_path) -> Path:
    """A transformers ``timm_wrapper`` model directory saved by hf_prune."""
    torch.manual_seed(0)
    config = TimmWrapperConfig(architecture="cifar_resnet20", num_labels=3, model_args={"in_chans": 3})
    model = AutoModelForImageClassification.from_config(config).eval()
    save_pretrained(model, tmp_path / "wrapper", source=ModelSource.from_model(model))
    return tmp_path / "wrapper"


# ------------------------------------------------------------------------------- what config.json may steer
@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_args"].update(checkpoint_path="/etc/evil.pth"), r"\['checkpoint_path'\] would make timm load"),
    (lambda c: c["model_args"].update(pretrained_cfg={"file": "/x"}), r"\['pretrained_cfg'\] would make timm load"),
    (lambda c: c.update(architecture="local-dir:/tmp"), "'architecture' is '(local-dir|hf-hub):.*never followed"),
    (lambda c: c.update(architecture="hf-hub:someone/evil"), "'architecture' is '(local-dir|hf-hub):.*never followed"),
    (lambda c: c.update(architecture="resnet_from_the_future"), "'resnet_from_the_future' is not a model of timm"),
    (lambda c: c["model_args"].update(drop_path_rate="../../etc"), r"'model_args.drop_path_rate' is '../../etc'"),
    (lambda c: c["model_args"].update(num_classes=10**7), r"'model_args.num_classes' is 10000000"),
])
def test_a_timm_config_steers_only_registry_names_and_bounded_sizes(saved_dir, edit, message):
    _edit_config(saved_dir, edit)
    with pytest.raises(PrunedModelError, match=message):
        AutoPrunedModel.from_pretrained(saved_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_args"].update(checkpoint_path="/etc/evil.pth"), r"\['checkpoint_path'\] would make timm load"),
    (lambda c: c.update(architecture="local-dir:/tmp"), "'architecture' is '(local-dir|hf-hub):.*never followed"),
    (lambda c: c.update(attn_implementation="kernels-community/evil"), "'attn_implementation' would choose code"),
    (lambda c: c.update(auto_map={"AutoModel": "evil.Model"}), "'auto_map' would choose code"),
    (lambda c: c.update(architectures=["TimmBackbone"]), r"'architectures' is \['TimmBackbone'\]"),
    (lambda c: c.update(model_type="llama"), "'model_type' is 'llama', not an image classifier"),
])
def test_a_timm_wrapper_config_passes_the_same_allow_list(wrapper_dir, edit, message):
    _edit_config(wrapper_dir, edit)
    with pytest.raises(PrunedModelError, match=message):
        AutoPrunedModel.from_pretrained(wrapper_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model_args"].update(checkpoint_path="/etc/evil.pth"), r"\['checkpoint_path'\] would make timm load"),
    (lambda c: c.update(architecture="hf-hub:someone/evil"), "'architecture' is 'hf-hub:someone/evil'.*never followed"),
])
def test_the_auto_classes_and_pipeline_apply_the_same_allow_list(saved_dir, edit, message):
    _edit_config(saved_dir, edit)
    with pytest.raises(PrunedModelError, match=message):
        AutoModelForImageClassification.from_pretrained(saved_dir)
    with pytest.raises(ValueError, match=message):  # pipeline re-raises what each model class said
        pipeline("image-classification", model=str(saved_dir))


def test_the_auto_classes_refuse_arguments_that_would_change_the_model(saved_dir):
    with pytest.raises(TypeError, match=r"config fields \['id2label', 'label2id'\] differ from the saved config.json"):
        AutoModelForImageClassification.from_pretrained(saved_dir, num_labels=3)
    with pytest.raises(TypeError, match=r"the arguments \['drop_rate'\] are not supported"):
        AutoModelForImageClassification.from_pretrained(saved_dir, drop_rate=0.5)
    with pytest.raises(TypeError, match=r"the arguments \['subfolder'\] are not supported"):  # only its default passes
        PrunedModelForImageClassification.from_pretrained(saved_dir, subfolder="elsewhere", proxies=None)
    with torch.no_grad():  # what only places or casts the model is accepted
        model = AutoModelForImageClassification.from_pretrained(saved_dir, dtype=torch.float64, device_map="cpu")
        assert model(INPUTS.double()).logits.dtype == torch.float64


def test_a_timm_wrapper_model_round_trips(wrapper_dir):
    reloaded = AutoPrunedModel.from_pretrained(wrapper_dir)
    assert reloaded.timm_model.fc.out_features == 3


def test_load_model_applies_the_allow_list_to_timm_and_transformers_dirs(tmp_path, wrapper_dir):
    timm_dir = tmp_path / "timm"
    timm.models.save_for_hf(timm.create_model("cifar_resnet20", num_classes=4), timm_dir, safe_serialization=True)
    _edit_config(timm_dir, lambda c: c.update(model_args={"checkpoint_path": str(tmp_path / "evil.pth")}))
    with pytest.raises(ValueError, match=r"\['checkpoint_path'\] would make timm load"):
        load_model(str(timm_dir), 4, pretrained=True)
    with pytest.raises(ValueError, match=r"\['checkpoint_path'\] would make timm load"):
        load_model("local-dir:" + str(timm_dir), 4)
    _edit_config(wrapper_dir, lambda c: c["model_args"].update(checkpoint_path=str(tmp_path / "evil.pth")))
    with pytest.raises(ValueError, match=r"\['checkpoint_path'\] would make timm load"):
        load_model(str(wrapper_dir), 3)


def test_a_huge_number_of_classes_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    model = AutoModelForImageClassification.from_config(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3))
    save_pretrained(model.eval(), tmp_path, source=ModelSource.from_model(model))
    _edit_config(tmp_path, lambda c: [c.pop("id2label"), c.pop("label2id"), c.update(num_labels=10**7)])
    monkeypatch.setattr(ModelSource, "build", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(PrunedModelError, match=r"'num_labels' is 10000000: sizes and factors are finite and at most"):
        AutoPrunedModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'num_labels' is 10000000"):
        load_model(str(tmp_path), 3)


_TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64)


@pytest.mark.parametrize("model_type, sizes", [
    ("clip", dict(vision_config=_TINY_VIT)),  # text_config and vision_config: sub-configs
    ("pvt", dict(image_size=32, num_encoder_blocks=2, depths=[1, 1], sequence_reduction_ratios=[2, 1],
                 hidden_sizes=[8, 16], patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2],
                 mlp_ratios=[2, 2])),  # PvtConfig declares num_labels itself: its id2label is None
    ("pp_lcnet", dict(scale=0.25)),  # its classifier returns the logits as last_hidden_state
])
def test_transformers_configs_of_other_shapes_save_and_reload_exactly(tmp_path, model_type, sizes):
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(CONFIG_MAPPING[model_type](num_labels=3, **sizes)).eval()
    save_pretrained(model, tmp_path, source=ModelSource.from_model(model))
    reloaded = AutoPrunedModel.from_pretrained(tmp_path)
    with torch.no_grad():  # relative only: the untrained PP-LCNet's logits are ~1e-41, where kernels differ
        torch.testing.assert_close(logits_of(reloaded(INPUTS)), logits_of(model(INPUTS)), rtol=1e-3, atol=0)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["vision_config"].update(attn_implementation="kernels-community/evil"),
     "field 'vision_config.attn_implementation' would choose code"),
    (lambda c: c["text_config"].update(auto_map={"AutoModel": "evil.Model"}), "field 'text_config.auto_map' would"),
    (lambda c: c["text_config"].update(hidden_act="../../etc"), r"'text_config.hidden_act' is '../../etc'"),
    (lambda c: c["vision_config"].update(num_hidden_layers=10**7), r"'vision_config.num_hidden_layers' is 10000000"),
    (lambda c: c["vision_config"].update(a={"b": {"c": {"d": 1}}}), r"'vision_config.a.b.c' nests sub-configs more"),
    (lambda c: c.update(id2label="cat"), "'id2label' is a str: class names are an object or a list"),
])
def test_sub_configs_pass_the_same_allow_list(edit, message):
    config = CLIPConfig(vision_config=_TINY_VIT, num_labels=3).to_dict()
    check_transformers_config(config)  # the config as transformers writes it passes
    edit(config)
    with pytest.raises(ValueError, match=message):
        check_transformers_config(config)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_file_linking_outside_the_directory_is_never_read(saved_dir, tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(saved_dir / name, elsewhere / name)
    (saved_dir / name).unlink()
    (saved_dir / name).symlink_to(elsewhere / name)
    with pytest.raises(PrunedModelError, match=f"links to {elsewhere / name}, outside"):
        AutoPrunedModel.from_pretrained(saved_dir)
    with pytest.raises(ValueError, match="outside"):
        load_model(str(saved_dir), 10)


def test_a_hub_cache_snapshot_may_link_into_its_own_blobs(saved_dir, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--someone--slim"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (repo / "blobs" / name).write_bytes((saved_dir / name).read_bytes())
        (snapshot / name).symlink_to(Path("..", "..", "blobs", name))
    monkeypatch.setattr(pretrained_module, "snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    reloaded = AutoPrunedModel.from_pretrained("someone/slim")
    assert torch.equal(reloaded(INPUTS), AutoPrunedModel.from_pretrained(saved_dir)(INPUTS))


def test_an_hf_hub_timm_name_is_checked_like_a_local_dir(tmp_path, monkeypatch):
    import hf_prune.models.loader as loader_module

    source = timm.create_model("cifar_resnet20", num_classes=4)
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    monkeypatch.setattr(loader_module, "snapshot_download", lambda repo_id, **kwargs: str(tmp_path))
    loaded = load_model("hf-hub:someone/resnet", 4, pretrained=True)
    assert (loaded.source, loaded.name) == ("timm", "cifar_resnet20")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    _edit_config(tmp_path, lambda c: c.update(model_args={"checkpoint_path": "/etc/evil.pth"}))
    with pytest.raises(ValueError, match=r"\['checkpoint_path'\] would make timm load"):
        load_model("hf-hub:someone/resnet", 4)


@pytest.mark.parametrize("edit", [
    lambda spec: spec.update(modules=[]),
    lambda spec: spec["modules"].update(conv1=5),
    lambda spec: spec.update(parameters=[1]),
])
def test_a_malformed_spec_section_is_a_clear_error(saved_dir, edit):
    _edit_config(saved_dir, lambda c: edit(c["hf_prune"]["shape_spec"]))
    with pytest.raises(PrunedModelError, match=r"shape spec in .*config.json is malformed .*save the model again"):
        AutoPrunedModel.from_pretrained(saved_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(model_args=[1]), "'model_args' is a list"),
    (lambda c: c.update(architecture=5), "'architecture' is 5"),
])
def test_a_malformed_source_is_a_clear_error(saved_dir, edit, message):
    _edit_config(saved_dir, edit)
    with pytest.raises(PrunedModelError, match=f"config.json does not describe a buildable source: {message}"):
        AutoPrunedModel.from_pretrained(saved_dir)


def test_weights_of_another_shape_are_refused_before_they_are_read(saved_dir, monkeypatch):
    save_file({"conv1.weight": torch.zeros(1)}, saved_dir / "model.safetensors")
    monkeypatch.setattr(pretrained_module, "load_file", lambda *a, **k: pytest.fail("tensors read"))
    with pytest.raises(PrunedModelError, match="'bn1.bias' is None in the weights"):
        AutoPrunedModel.from_pretrained(saved_dir)


# -------------------------------------------------------------------- meta device, computed buffers
def _timm_swin() -> torch.nn.Module:
    return timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4, depths=(1, 1),
                             num_heads=(1, 2), embed_dim=16, num_classes=3)


def _transformers_swin() -> torch.nn.Module:
    return AutoModelForImageClassification.from_config(SwinConfig(
        image_size=32, patch_size=4, window_size=4, depths=[1, 1], num_heads=[1, 2], embed_dim=16, num_labels=3))


@pytest.mark.parametrize("build", [_timm_swin, _transformers_swin])
def test_computed_buffers_are_rebuilt_on_a_model_built_on_meta(tmp_path, monkeypatch, build):
    torch.manual_seed(0)
    model = build().eval()
    save_pretrained(model, tmp_path, source=ModelSource.from_model(model))

    built_on = []
    original_build = ModelSource.build
    monkeypatch.setattr(ModelSource, "build",
                        lambda self, device="meta": built_on.append(str(device)) or original_build(self, device))
    reloaded = AutoPrunedModel.from_pretrained(tmp_path)

    assert built_on == ["meta"]
    expected = {n: b for n, b in model.named_buffers()}
    assert expected.keys() == dict(reloaded.named_buffers()).keys()
    assert all(torch.equal(b, expected[n]) for n, b in reloaded.named_buffers())
    with torch.no_grad():
        assert torch.equal(_logits(reloaded(INPUTS)), _logits(model(INPUTS)))


def test_a_computed_buffer_no_hook_rebuilds_comes_from_a_cpu_build(tmp_path, monkeypatch):
    from timm.models.swin_transformer import WindowAttention

    torch.manual_seed(0)
    model = _timm_swin().eval()
    save_pretrained(model, tmp_path, source=ModelSource.from_model(model))
    monkeypatch.delattr(WindowAttention, "init_non_persistent_buffers")
    built_on = []
    original_build = ModelSource.build
    monkeypatch.setattr(ModelSource, "build",
                        lambda self, device="meta": built_on.append(str(device)) or original_build(self, device))
    reloaded = AutoPrunedModel.from_pretrained(tmp_path)
    assert built_on == ["meta", "cpu"]
    with torch.no_grad():
        assert torch.equal(reloaded(INPUTS), model(INPUTS))


# ------------------------------------------------------------------------------- exact round trips
def test_a_pooling_changed_after_creation_is_recorded_and_reloads_exactly(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=3)
    source = ModelSource.from_model(model)
    model.reset_classifier(3, global_pool="max")
    save_pretrained(model.eval(), tmp_path, source=source)
    assert json.loads((tmp_path / "config.json").read_text())["model_args"]["global_pool"] == "max"
    with torch.no_grad():
        assert torch.equal(AutoPrunedModel.from_pretrained(tmp_path)(INPUTS), model(INPUTS))


def test_a_setting_the_config_cannot_record_makes_the_save_refuse(saved_dir):
    before = _model_files(saved_dir)
    model, source = _resnet(seed=1)
    model.fc.register_forward_hook(lambda module, inputs, output: output * 2)
    with pytest.raises(PrunedModelError, match="does not reload exactly"):
        save_pretrained(model, saved_dir, source=source)
    assert _model_files(saved_dir) == before


def test_a_mixed_precision_forward_is_not_taken_for_a_model_setting(tmp_path):
    model, source = _resnet()
    plain_forward = model.forward

    def bf16_forward(*args, **kwargs):  # what accelerate's mixed_precision="bf16" does to a prepared model
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain_forward(*args, **kwargs).float()

    model.forward = bf16_forward
    save_pretrained(model, tmp_path, source=source)
    assert model.forward is bf16_forward
    with torch.no_grad():
        assert torch.equal(AutoPrunedModel.from_pretrained(tmp_path)(INPUTS), plain_forward(INPUTS))


# ------------------------------------------------------------------------------- all-or-nothing saves
def _model_files(directory: Path) -> tuple[bytes, bytes]:
    """What any reader sees: the bytes behind the top-level config.json and model.safetensors."""
    return (directory / "config.json").read_bytes(), (directory / "model.safetensors").read_bytes()


class _Injected(OSError):
    pass


_WRITES = [(pretrained_module, "save_file"), (pretrained_module, "write_text_atomic"), (pretrained_module, "_fsync_file"),
           (shutil, "copyfile"), (os, "replace"), (os, "symlink"), (os, "link"), (model_dir_module, "_fsync")]


def test_a_save_failing_at_any_write_leaves_the_complete_old_or_new_model(tmp_path, monkeypatch):
    old, source = _resnet(seed=0)
    new, _ = _resnet(seed=1, keep=2)
    reference = tmp_path / "reference"
    save_pretrained(new, reference / "new", source=source)
    save_pretrained(old, reference / "old", source=source, model_card="old card")
    (reference / "old" / "checkpoint-1").mkdir()
    (reference / "old" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (reference / "old" / "notes.txt").write_text("mine")
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    views = {"old": _model_files(reference / "old"), "new": _model_files(reference / "new")}

    failing_at = 0
    while True:
        directory = tmp_path / f"run{failing_at}"
        shutil.copytree(reference / "old", directory, symlinks=True)
        calls = []
        with monkeypatch.context() as patch:
            for owner, name in _WRITES:
                def failing(*args, _original=getattr(owner, name), **kwargs):
                    calls.append(1)
                    if len(calls) == failing_at + 1:
                        raise _Injected("injected")
                    return _original(*args, **kwargs)
                patch.setattr(owner, name, failing)
            try:
                save_pretrained(new, directory, source=source, extra_files={"plot.png": str(plot)})
                completed = True
            except _Injected:
                completed = False
        seen = _model_files(directory)
        assert seen in (views["old"], views["new"]), f"mixed model after a failure at write {failing_at}"
        assert seen == views["new"] or not completed
        reloaded = AutoPrunedModel.from_pretrained(directory)
        assert reloaded.conv1.out_channels == (old if seen == views["old"] else new).conv1.out_channels
        assert (directory / "notes.txt").read_text() == "mine"
        assert (directory / "checkpoint-1" / "trainer_state.json").read_text() == "{}"
        if seen == views["old"]:
            assert (directory / "README.md").read_text() == "old card"
        if completed:
            break
        failing_at += 1
    assert failing_at > 10  # every write of a save was failed once

    save_pretrained(new, directory, source=source)  # a later save cleans what the failed ones left
    names = sorted(p.name for p in directory.iterdir())
    assert names == [".hf_prune", "checkpoint-1", "config.json", "model.safetensors", "notes.txt"]
    assert len(os.listdir(directory / ".hf_prune")) == 2


def test_a_failed_atomic_text_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "pruning_report.json"
    write_text_atomic(path, "old")

    def full_disk(descriptor: int) -> None:
        raise _Injected("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        with pytest.raises(_Injected):
            write_text_atomic(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["pruning_report.json"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["pruning_report.json"]


def test_a_save_over_plain_files_adopts_them_and_removes_old_staging_leftovers(saved_dir):
    for name in ("config.json", "model.safetensors"):  # the layout of older saves: plain files
        target = saved_dir / name
        content = target.read_bytes()
        target.unlink()
        target.write_bytes(content)
    (saved_dir / ".hf_prune-staging-abc").mkdir()
    model, source = _resnet(seed=1, keep=2)
    save_pretrained(model, saved_dir, source=source)
    assert sorted(os.listdir(saved_dir)) == [".hf_prune", "config.json", "model.safetensors"]
    assert AutoPrunedModel.from_pretrained(saved_dir).conv1.out_channels == model.conv1.out_channels


@pytest.mark.slow
@pytest.mark.parametrize("moment, survivor", [("weights", "old"), ("commit", "old"), ("after_commit", "new")])
def test_a_sigkill_mid_save_leaves_the_complete_old_or_new_model(tmp_path, moment, survivor):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(TESTS / "_save_kill_worker.py"), moment, str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert _model_files(tmp_path / "model") == _model_files(tmp_path / survivor)
    reloaded = AutoPrunedModel.from_pretrained(tmp_path / "model")
    expected = AutoPrunedModel.from_pretrained(tmp_path / survivor)
    assert torch.equal(reloaded(INPUTS), expected(INPUTS))

    model, source = _resnet(seed=2)
    save_pretrained(model, tmp_path / "model", source=source)  # cleans the killed save's leftovers
    assert sorted(os.listdir(tmp_path / "model")) == [".hf_prune", "config.json", "model.safetensors", "notes.txt"]
    assert len(os.listdir(tmp_path / "model" / ".hf_prune")) == 2
