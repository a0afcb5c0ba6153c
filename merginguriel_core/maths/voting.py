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


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis."""
    return -(probabilities * np.log(np.clip(probabilities, 1e-30, None))).sum(-1)


def entropy_minimised_weights(logits: np.ndarray, weights: np.ndarray, steps: int, learning_rate: float
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Per example, ensemble weights that lower the entropy of the weighted logits' prediction.

    EMEA-style test-time ensembling (Wang et al., Findings of EMNLP 2021): example n's weights
    are ``softmax(b_n)``, ``b_n`` starting at ``log weights``; each of ``steps`` gradient steps
    on the entropy of ``softmax(Σ_k w_nk · logits_k[n])`` moves ``b_n`` by ``learning_rate``
    times the gradient, halving the step for an example until its entropy does not rise (so
    it never does). Returns ``(weights (N, K), mixed logits (N, C))``. With identical models
    the gradient is zero and the weights stay where they start.
    """
    k, n, _ = logits.shape
    z = np.moveaxis(np.asarray(logits, dtype=np.float64), 0, 1)  # (N, K, C)
    b = np.tile(np.log(np.clip(np.asarray(weights, dtype=np.float64), 1e-12, None)), (n, 1))  # (N, K)

    def evaluate(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = softmax(b)
        mixed = np.einsum("nk,nkc->nc", w, z)
        return w, mixed, entropy(softmax(mixed))

    w, mixed, h = evaluate(b)
    for _ in range(steps):
        p = softmax(mixed)
        d_mixed = -p * (np.log(np.clip(p, 1e-30, None)) + h[:, None])  # dH/dz
        g = np.einsum("nc,nkc->nk", d_mixed, z)  # dH/dw_k
        d_b = w * (g - (w * g).sum(-1, keepdims=True))  # through the softmax
        rate = np.full(n, float(learning_rate))
        todo = np.ones(n, dtype=bool)
        for _ in range(20):  # backtracking: a step that raises an example's entropy is halved
            trial = np.where(todo[:, None], b - rate[:, None] * d_b, b)
            w_t, mixed_t, h_t = evaluate(trial)
            worse = todo & (h_t > h)
            b, w, mixed, h = (np.where(~worse[:, None], trial, b), np.where(~worse[:, None], w_t, w),
                              np.where(~worse[:, None], mixed_t, mixed), np.where(~worse, h_t, h))
            todo = worse
            rate = np.where(worse, rate / 2, rate)
            if not todo.any():
                break
    return w, mixed
