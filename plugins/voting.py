"""Built-in voting methods: combine K models' logits on the same examples.

Each returns per-class scores (N, C); the prediction is their argmax, and ``numpy.argmax``
returns the lowest class id among equal scores, which is how every method breaks ties.
"""

from __future__ import annotations

import numpy as np

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import VotingMethod


def votes(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ over models of weight × one-hot(argmax logits): (K, N, C), (K,) -> (N, C)."""
    k, n, c = logits.shape
    scores = np.zeros((n, c))
    choices = logits.argmax(-1)  # (K, N)
    for model in range(k):
        scores[np.arange(n), choices[model]] += weights[model]
    return scores


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


class Majority(VotingMethod):
    name = "majority"
    description = "Plain majority vote of the models' predicted labels (ties: the lowest label id)."

    def combine(self, logits, weights, params):
        return votes(logits, np.ones(len(logits)))


class WeightedMajority(VotingMethod):
    name = "weighted_majority"
    description = "Each model's predicted label counts with the model's weight (ties: the lowest label id)."

    def combine(self, logits, weights, params):
        return votes(logits, weights)


class Soft(VotingMethod):
    name = "soft"
    description = "Average of the models' probability distributions (softmax of the logits), unweighted."

    def combine(self, logits, weights, params):
        return softmax(logits).mean(0)


class UrielLogits(VotingMethod):
    name = "uriel_logits"
    description = "Σ wᵢ · logitsᵢ with wᵢ the normalised weights (URIEL by default) of the selected sources."

    def combine(self, logits, weights, params):
        return np.tensordot(weights, logits, axes=1)


@hookimpl
def register_voting_methods(register):
    for method in (Majority(), WeightedMajority(), Soft(), UrielLogits()):
        register(method)
