"""The model card says what the run produced: honest rows, Hub metadata, a working "Use it" snippet (issue 18)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from huggingface_hub import ModelCard

from hf_prune import ModelSource
from hf_prune.trainer.card import RunFacts, render_card
from hf_prune.trainer.pruning_state import PruningRecord

PRUNE_EVENT = {"global_step": 5, "epoch": 1.0, "reason": "target reached", "macs_after": 2e7, "params_before": 2.7e5, "params_after": 1.4e5,
               "macs_reduction": 0.5, "metrics_before": {"eval_before_prune_top1": 0.2, "eval_before_prune_top5": 0.6}}
FINAL_EVAL = {"step": 20, "eval_top1": 0.9, "eval_top5": 0.99}


def _facts(make_args, tmp_path, *, num_classes: int = 10, model: torch.nn.Module | None = None,
           source: ModelSource | None = None) -> RunFacts:
    """The record of a run that pruned once at epoch 1 and evaluated 90 % top-1 (99 % top-5) at the end."""
    model = model or timm.create_model("cifar_resnet20", num_classes=num_classes)
    return RunFacts(
        record=PruningRecord("magnitude", dense_macs=40_000_000, events=[PRUNE_EVENT]),
        args=make_args(tmp_path, card_latency=False), log_history=[FINAL_EVAL], model=model,
        source=source or ModelSource.from_model(model), input_size=(3, 32, 32), macs=20_000_000, widths={},
    )


def _card(facts: RunFacts, **card_kwargs) -> ModelCard:
    return ModelCard(render_card(facts, [], "someone/slim", card_kwargs))


def _rows(card: ModelCard) -> dict[str, list[str]]:
    """The results table: ``{label: [top-1, top-5, MACs, params, ...]}``."""
    table = card.text[card.text.index("## Results"):card.text.index("MACs reduction")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[4:] if line]
    return {row[0]: row[1:] for row in cells}


def test_the_checkpoint_that_was_pruned_is_not_shown_as_a_dense_reference(make_args, tmp_path):
    rows = _rows(_card(_facts(make_args, tmp_path)))
    assert list(rows) == [
        "dense, trained 1.00 epochs (checkpoint that was pruned; not a trained dense reference)",
        "pruned (end of training)",
    ]
    assert [cells[0] for cells in rows.values()] == ["20.00", "90.00"]


def test_attention_kept_whole_is_named_on_the_card(make_args, tmp_path):
    facts = _facts(make_args, tmp_path)
    assert "kept whole" not in _card(facts).text
    facts.record.events[0] = {**PRUNE_EVENT, "kept_attention": ["blocks.1.attn", "blocks.0.attn"]}
    assert "Attention layers kept whole (hf_prune cannot remove heads from their kind yet): `blocks.0.attn`, " \
           "`blocks.1.attn`." in _card(facts).text


def test_a_trained_dense_reference_gets_its_own_row(make_args, tmp_path):
    metrics = tmp_path / "dense" / "eval_results.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"eval_top1": 0.93, "eval_top5": 0.995}))
    for given, top1 in ((str(metrics), "93.00"), ({"top1": 0.95}, "95.00")):
        rows = _rows(_card(_facts(make_args, tmp_path), dense_reference=given))
        assert list(rows)[0] == "dense reference (trained without pruning)"
        assert rows["dense reference (trained without pruning)"][:3] == [top1, "99.50" if top1 == "93.00" else "n/a", "40.00"]
    with pytest.raises(ValueError, match="has no 'top1' or 'eval_top1'"):
        _card(_facts(make_args, tmp_path), dense_reference={"accuracy": 0.9})


@pytest.mark.parametrize("num_classes, top5", [(4, "n/a"), (5, "n/a"), (10, "99.00")])
def test_top5_is_shown_only_with_more_than_five_classes(make_args, tmp_path, num_classes, top5):
    card = _card(_facts(make_args, tmp_path, num_classes=num_classes), dataset_tags="ylecun/mnist", dataset="MNIST")
    assert _rows(card)["pruned (end of training)"][1] == top5
    metrics = [result.metric_type for result in card.data.eval_results]
    assert metrics == (["accuracy"] if top5 == "n/a" else ["accuracy", "top_5_accuracy"])


@pytest.mark.parametrize("finetuned_from, base_model", [
    ("timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k"),
    ("hf-hub:timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k"),
    ("/tmp/runs/dense", None),
    ("cifar_resnet20", None),
    ("runs/dense", None),  # an existing folder, named like a Hub id
])
def test_base_model_is_set_only_for_a_hub_model_id(make_args, tmp_path, monkeypatch, finetuned_from, base_model):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "dense").mkdir(parents=True)
    card = _card(_facts(make_args, tmp_path), finetuned_from=finetuned_from)
    assert card.data.base_model == base_model
    assert ("](https://huggingface.co/timm/resnet18.a1_in1k)" in card.text) == (base_model is not None)
    assert "huggingface.co//" not in card.text and "huggingface.co/runs" not in card.text


def test_hub_metadata_and_model_index_when_a_dataset_is_known(make_args, tmp_path):
    card = _card(_facts(make_args, tmp_path), dataset_tags="ylecun/mnist", dataset="MNIST", license="apache-2.0")
    assert (card.data.pipeline_tag, card.data.library_name, card.data.license) == (
        "image-classification", "hf_prune", "apache-2.0")
    assert card.data.datasets == ["ylecun/mnist"] and "model-index:" in str(card)
    (top1, top5) = card.data.eval_results
    assert (top1.dataset_type, top1.dataset_name, top1.metric_value, top5.metric_value) == ("ylecun/mnist", "MNIST", 90.0, 99.0)

    without_dataset = _card(_facts(make_args, tmp_path))
    assert without_dataset.data.eval_results is None and "model-index" not in str(without_dataset)


@pytest.mark.parametrize("uniform", [False, True])
def test_the_use_it_snippet_is_a_pipeline_that_imports_hf_prune_only_when_needed(make_args, tmp_path, uniform,
                                                                                 uniform_vit):
    model, source = uniform_vit if uniform else (None, None)
    card = _card(_facts(make_args, tmp_path, model=model, source=source))
    snippet = card.text[card.text.index("## Use it"):].split("```python\n")[1].split("```")[0]
    assert 'classifier = pipeline("image-classification", model="someone/slim")' in snippet
    assert ("import hf_prune" in snippet) == (not uniform)  # vanilla transformers loads uniform widths
    assert card.data.library_name == ("transformers" if uniform else "hf_prune")
