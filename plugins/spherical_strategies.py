"""Built-in strategies ``slerp`` and ``model_stock``: geometry from one Gram-matrix pass.

Both accumulate the K×K Gram matrix of the tensor (or of its task vectors) chunk by chunk,
derive a few coefficients from it, and write the merged tensor as a linear combination of
the sources in a second pass.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Chunk, MergeStrategy, TensorJob
from merginguriel_core.params import Param
from merginguriel_plugins import tensor_maths as tm
from merginguriel_plugins.spherical import model_stock_ratio, spherical_coefficients


def gram_matrix(job: TensorJob, task_vectors: bool) -> torch.Tensor:
    """⟨xᵢ, xⱼ⟩ over the whole tensor (xᵢ = θᵢ, or θᵢ − θ_base), in float64, streamed."""
    k = len(job.weights)
    gram = torch.zeros(k, k, dtype=torch.float64)
    for chunk in job.chunks():
        rows = torch.stack([(s - chunk.base) if task_vectors else s for s in chunk.sources]).reshape(k, -1)
        rows = rows.to(torch.float64)  # angles between close fine-tunes need the precision
        gram += (rows @ rows.T).cpu()
    return gram


class SlerpStrategy(MergeStrategy):
    name = "slerp"
    description = (
        "Spherical interpolation: SLERP for two models (at t, default the second model's weight share), "
        "the weighted Karcher mean on the sphere for more; norms interpolated linearly."
    )
    reference = "https://en.wikipedia.org/wiki/Slerp"
    params = (
        Param("t", float, None, "interpolation point between the first (t=0) and second (t=1) source; "
              "default: from the weights; needs exactly 2 sources", minimum=0.0, maximum=1.0),
    )

    def check(self, params: Mapping[str, Any], num_models: int, options: Mapping[str, Any]) -> None:
        if params["t"] is not None and num_models != 2:
            raise ConfigError(
                f"slerp t={params['t']} needs exactly 2 source models, got {num_models}; "
                f"omit t to take the spherical mean of all sources by their weights"
            )

    def _weights(self, job_or_chunk) -> torch.Tensor:
        t = job_or_chunk.params["t"]
        if t is None:
            return job_or_chunk.weights
        return torch.tensor([1 - t, t], dtype=job_or_chunk.weights.dtype, device=job_or_chunk.weights.device)

    def tensor_statistics(self, job: TensorJob) -> torch.Tensor | None:
        return spherical_coefficients(gram_matrix(job, task_vectors=False), self._weights(job).cpu())

    def merge_chunk(self, chunk: Chunk, statistics: torch.Tensor | None) -> torch.Tensor:
        weights = self._weights(chunk)
        if statistics is None:  # (nearly) colinear, zero or opposite: linear interpolation
            return tm.weighted_average(chunk.sources, weights)
        return tm.weighted_sum(chunk.sources, statistics.to(torch.float32))


class ModelStockStrategy(MergeStrategy):
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
        return model_stock_ratio(gram_matrix(job, task_vectors=True), job.weights.cpu())

    def merge_chunk(self, chunk: Chunk, statistics: float | None) -> torch.Tensor:
        average = tm.weighted_average(chunk.sources, chunk.weights)
        if chunk.base is None or statistics is None:
            return average
        return statistics * average + (1 - statistics) * chunk.base


@hookimpl
def register_strategies(register):
    register(SlerpStrategy())
    register(ModelStockStrategy())
