"""Example MergingUriel plugin: the ``median`` merge strategy and ``median_logits`` voting method.

Each output parameter is the weighted median of the K source values: the smallest source
value at which the cumulative weight (sources sorted by value) reaches half of the total.
With equal weights and an odd K this is the ordinary median. It ignores outliers that a
weighted average would follow.
"""

from __future__ import annotations

import torch

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeStrategy, VotingMethod


def weighted_median(tensors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Element-wise weighted median of aligned tensors.

    Args:
        tensors: K tensors of one shape.
        weights: shape (K,), non-negative, summing to a positive number.
    Returns:
        A tensor of the common shape.
    """
    stacked = torch.stack(tensors)  # (K, ...)
    values, order = stacked.sort(dim=0)
    expanded = weights.reshape(-1, *([1] * (stacked.dim() - 1))).expand_as(stacked)
    cumulative = expanded.gather(0, order).cumsum(dim=0)
    first_past_half = (cumulative >= weights.sum() / 2).to(torch.int8).argmax(dim=0, keepdim=True)
    return values.gather(0, first_past_half).squeeze(0)


class MedianStrategy(MergeStrategy):
    name = "median"
    description = "Element-wise weighted median of the source parameters (robust to outlier models)."
    reference = "https://en.wikipedia.org/wiki/Weighted_median"

    def merge_chunk(self, chunk: Chunk, statistics) -> torch.Tensor:
        return weighted_median(chunk.sources, chunk.weights)


@hookimpl
def register_strategies(register):
    register(MedianStrategy())


class MedianLogits(VotingMethod):
    name = "median_logits"
    description = "Per class, the weighted median of the models' logits (robust to one overconfident model)."

    def combine(self, logits, weights, params):
        stacked = torch.from_numpy(logits).double()  # (K, N, C)
        return weighted_median(list(stacked), torch.from_numpy(weights).double()).numpy()


@hookimpl
def register_voting_methods(register):
    register(MedianLogits())
