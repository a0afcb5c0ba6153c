"""Built-in strategy ``model_stock``: interpolate the weighted average towards the base by the
task vectors' mean cosine (Jang et al., 2024), from one Gram-matrix pass per tensor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeStrategy, TensorJob
from merginguriel_core.maths.spherical import gram_matrix, model_stock_ratio
from merginguriel_core.maths.tensors import weighted_average

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch


class ModelStockStrategy(MergeStrategy):
    keeps_agreement = True  # agreed inputs merge to themselves
    name = "model_stock"
    description = (
        "Model Stock: t·(Σ wᵢθᵢ) + (1−t)·θ_base, t = K·cosθ/(1+(K−1)·cosθ) from the (weighted) mean "
        "pairwise cosine of the task vectors, per tensor."
    )
    reference = "https://arxiv.org/abs/2403.19522"
    needs_base = True

    def tensor_statistics(self, job: TensorJob) -> float | None:
        if not job.has_base:
            return None
        task_vectors = ([source - chunk.base for source in chunk.sources] for chunk in job.chunks())
        return model_stock_ratio(gram_matrix(task_vectors, len(job.weights)), job.weights.cpu())

    def merge_chunk(self, chunk: Chunk, statistics: float | None) -> torch.Tensor:
        average = weighted_average(chunk.sources, chunk.weights)
        if chunk.base is None or statistics is None:
            return average
        return statistics * average + (1 - statistics) * chunk.base


@hookimpl
def register_strategies(register):
    register(ModelStockStrategy())
