"""Votes and probabilities from K models' logits: the maths of the built-in voting methods.

(Was part of ``merginguriel_plugins.voting``.) Logits are ``numpy`` arrays (K, N, C); the
methods' scores are (N, C), and the prediction is their argmax (``numpy.argmax`` returns the
lowest class id among equal scores, which is how every method breaks ties).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


def votes(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ over models of weight × one-hot(argmax logits): (K, N, C), (K,) -> (N, C)."""
    k, n, c = logits.shape
    scores = np.zeros((n, c))
    choices = logits.argmax(-1)  # (K, N)
    for model in range(k):
        scores[np.arange(n), choices[model]] += weights[model]
    return scores


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed stably."""
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)
