"""Metrics from predicted and gold label ids: the maths of the built-in evaluators.

(Was part of ``merginguriel_plugins.evaluators``.) ``numpy`` arrays of label ids in, floats out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the gold label."""
    return float(np.mean(predictions == labels)) if len(labels) else 0.0


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions
    (a class absent from both is left out, as scikit-learn does)."""
    scores = []
    for label in range(num_labels):
        true_positive = int(np.sum((predictions == label) & (labels == label)))
        predicted = int(np.sum(predictions == label))
        actual = int(np.sum(labels == label))
        if predicted == 0 and actual == 0:
            continue
        scores.append(2 * true_positive / (predicted + actual))
    return float(np.mean(scores)) if scores else 0.0
