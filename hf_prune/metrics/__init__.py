"""Metrics for the Trainer, computed through a packaged `evaluate` module (no Hub access)."""
from __future__ import annotations

import functools
import os
from typing import Any

import evaluate
import numpy as np

TOPK_ACCURACY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "topk_accuracy.py")

__all__ = ["TOPK_ACCURACY_PATH", "compute_topk_metrics", "load_topk_accuracy"]


@functools.lru_cache(maxsize=1)
def load_topk_accuracy() -> evaluate.EvaluationModule:
    """The packaged top-k accuracy metric, loaded once per process.

    `evaluate.load("accuracy")` would fetch its script from the Hub; loading by path works
    offline. `keep_in_memory` avoids arrow cache files, which ranks evaluating at the same time
    would otherwise contend for.
    """
    return evaluate.load(TOPK_ACCURACY_PATH, keep_in_memory=True)


def compute_topk_metrics(eval_pred: Any) -> dict[str, float]:
    """`Trainer(compute_metrics=...)` hook: {"top1": ..., "top5": ...} accuracies in [0, 1].

    Args:
        eval_pred: An `EvalPrediction` (or `(predictions, label_ids)` pair) with logits of shape
            (N, C); a tuple of outputs (logits first) is accepted too. With fewer than 5 classes,
            "top5" is the top-C accuracy.
    """
    predictions, label_ids = eval_pred[0], eval_pred[1]
    logits = np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
    top5_k = min(5, logits.shape[-1])
    result = load_topk_accuracy().compute(predictions=logits, references=np.asarray(label_ids), k=sorted({1, top5_k}))
    return {"top1": result["top1"], "top5": result[f"top{top5_k}"]}
