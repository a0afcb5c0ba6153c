"""Built-in strategy ``linear``: the weighted average of the source parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeStrategy
from merginguriel_core.maths.tensors import weighted_average

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch


class LinearStrategy(MergeStrategy):
    keeps_agreement = True  # agreed inputs merge to themselves
    name = "linear"
    description = "Weighted average of the source parameters: θ = Σ wᵢ θᵢ (weights sum to 1)."
    reference = "https://arxiv.org/abs/2203.05482"

    def merge_chunk(self, chunk: Chunk, statistics: Any) -> torch.Tensor:
        return weighted_average(chunk.sources, chunk.weights)


@hookimpl
def register_strategies(register):
    register(LinearStrategy())
