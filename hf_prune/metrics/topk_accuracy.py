"""Top-k accuracy: an `evaluate` metric module shipped in hf_prune and loaded by path (works offline).

evaluate scans this file's imports to decide what to install: keep one import per line.
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Top-k accuracy: the fraction of examples whose true class is among the k highest-scoring classes.
Computed from per-class scores (logits or probabilities) and integer labels. Ties count against
the prediction (a true class tied with others ranks behind them) and NaN scores rank last,
so a model that emits constant or NaN logits scores 0 rather than 1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): Per-class scores, one row of C floats per example; or
        (`list` of `int`) predicted class indices, as `evaluate.evaluator("image-classification")`
        passes them, which give top-1 only.
    references (`list` of `int`): True class index of each example, in [0, C).
    k (`int` or `list` of `int`, defaults to 1): The k (or several k) to report, each in [1, C].

Returns:
    A dict with one entry `top{k}` per requested k: the top-k accuracy, a float in [0, 1].

Examples:
    >>> metric = evaluate.load("hf_prune/metrics/topk_accuracy.py")
    >>> metric.compute(predictions=[[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]], references=[1, 1], k=[1, 2])
    {'top1': 0.5, 'top2': 1.0}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopkAccuracy(evaluate.Metric):
    """Top-k accuracy from per-class scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float32")),
                        "references": datasets.Value("int64"),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
            reference_urls=["https://pytorch.org/docs/stable/generated/torch.topk.html"],
        )

    def _compute(self, predictions, references, k=1):
        labels = np.asarray(references, dtype=np.int64)
        if np.ndim(predictions) == 1:
            if k != 1 or len(predictions) != len(labels):
                raise ValueError("Predicted class indices give top-1 only (k=1), one per reference")
            return {"top1": float(np.mean(np.asarray(predictions, dtype=np.int64) == labels))}
        scores = np.asarray(predictions, dtype=np.float32)
        ks = [k] if isinstance(k, (int, np.integer)) else list(k)
        if scores.ndim != 2 or len(scores) != len(labels):
            raise ValueError(
                f"Expected predictions of shape (N, C) and N references, got {scores.shape} and {labels.shape}"
            )
        num_classes = scores.shape[1]
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
            raise ValueError(f"References must be class indices in [0, {num_classes})")
        if not ks or any(not 1 <= value <= num_classes for value in ks):
            raise ValueError(f"k must be in [1, {num_classes}], got {k}")
        ranks = _true_class_ranks(scores, labels)
        return {f"top{value}": float(np.mean(ranks < value)) for value in ks}


def _true_class_ranks(scores, labels):
    """0-based rank of each true class; classes tied with it rank ahead of it, NaN ranks last."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    true_scores = np.take_along_axis(scores, labels[:, None], axis=1)
    # Every class scoring >= the true class ranks ahead of it; -1 removes the true class itself.
    return np.sum(scores >= true_scores, axis=1) - 1
