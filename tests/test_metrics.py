"""Top-k accuracy through the packaged evaluate module."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from transformers import EvalPrediction

from hf_prune.metrics import TOPK_ACCURACY_PATH, compute_topk_metrics, load_topk_accuracy


def _logits_with_true_class_at_rank(ranks: list[int], num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Logits where example i's true class i % C is the ranks[i]-th highest score (0 = best)."""
    logits = np.zeros((len(ranks), num_classes), dtype=np.float32)
    labels = np.arange(len(ranks)) % num_classes
    for row, (label, rank) in enumerate(zip(labels, ranks, strict=True)):
        order = [c for c in range(num_classes) if c != label]
        order.insert(rank, label)
        logits[row, order] = np.linspace(5.0, -5.0, num_classes)
    return logits, labels


def test_module_loads_by_path_offline() -> None:
    metric = load_topk_accuracy()
    assert isinstance(metric, evaluate.EvaluationModule)
    assert "top-k accuracy" in metric.description.lower()
    # Two input forms (per-class scores, or class indices from evaluate's evaluator), same columns.
    assert [set(features) for features in metric.features] == [{"predictions", "references"}] * 2
    assert load_topk_accuracy() is metric  # cached: no reload per evaluation
    assert TOPK_ACCURACY_PATH.endswith("topk_accuracy.py")


def test_top1_half_top5_all() -> None:
    logits, labels = _logits_with_true_class_at_rank([0, 0, 1, 4])
    assert compute_topk_metrics(EvalPrediction(predictions=logits, label_ids=labels)) == {"top1": 0.5, "top5": 1.0}


def test_ranks_beyond_five() -> None:
    logits, labels = _logits_with_true_class_at_rank([0, 2, 5, 9])
    assert compute_topk_metrics((logits, labels)) == {"top1": 0.25, "top5": 0.5}


def test_compute_several_k_directly() -> None:
    logits, labels = _logits_with_true_class_at_rank([0, 1, 2, 3, 9])
    result = load_topk_accuracy().compute(predictions=logits, references=labels, k=[1, 2, 3, 10])
    assert result == {"top1": 0.2, "top2": 0.4, "top3": 0.6, "top10": 1.0}
    assert load_topk_accuracy().compute(predictions=logits, references=labels, k=4) == {"top4": 0.8}


def test_fewer_than_five_classes() -> None:
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    labels = np.array([1, 0])
    # top5 degrades to top-3 accuracy, which is 1 with 3 classes.
    assert compute_topk_metrics((logits, labels)) == {"top1": 0.0, "top5": 1.0}


def test_matches_argmax_on_random_logits() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 20)).astype(np.float32)
    labels = rng.integers(0, 20, 500)
    result = compute_topk_metrics((logits, labels))
    assert result["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert result["top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)))


def test_tuple_of_outputs_uses_logits() -> None:
    logits, labels = _logits_with_true_class_at_rank([0, 6])
    hidden = np.zeros((2, 3))
    assert compute_topk_metrics(((logits, hidden), labels)) == {"top1": 0.5, "top5": 0.5}


def test_degenerate_logits_score_zero() -> None:
    labels = np.array([0, 1, 2, 3, 4, 5, 6])
    constant = np.zeros((7, 10))
    assert compute_topk_metrics((constant, labels)) == {"top1": 0.0, "top5": 0.0}
    nan = np.full((7, 10), np.nan)
    assert compute_topk_metrics((nan, labels)) == {"top1": 0.0, "top5": 0.0}


@pytest.mark.parametrize("k", [0, 11])
def test_k_out_of_range(k: int) -> None:
    logits, labels = _logits_with_true_class_at_rank([0, 1])
    with pytest.raises(ValueError, match="k must be"):
        load_topk_accuracy().compute(predictions=logits, references=labels, k=k)


def test_label_out_of_range() -> None:
    with pytest.raises(ValueError, match="class indices"):
        load_topk_accuracy().compute(predictions=[[0.1, 0.9]], references=[2])
