"""Built-in strategies ``slerp`` (mergekit's, two models) and ``karcher`` (the N-model spherical mean).

Both accumulate the Gram matrix of the tensor chunk by chunk in a first pass
(:func:`~merginguriel_core.maths.spherical.gram_matrix`), derive per-model coefficients from
it, and write the merged tensor as Σ aᵢ θᵢ in a second pass, so no tensor is held whole.

- ``slerp`` equals mergekit's ``slerp`` to float rounding: the raw tensors θ₀, θ₁ (each one
  flat vector) interpolated at ``t`` with the angle between their directions, linear where
  they are nearly colinear (:func:`~merginguriel_core.maths.spherical.slerp_coefficients`).
  θ₀ is the first source (the highest weight) and ``t`` the weight of the second, as
  mergekit's ``t`` weighs the model that is not its ``base_model``: by default the second
  source's normalised weight w₁, or ``--param t=…``.
- ``karcher`` takes the weighted Karcher mean of the directions and the weighted mean of
  the norms (what ``slerp`` computed before it followed mergekit); for two models it is
  SLERP of the directions with linearly interpolated norms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Chunk, MergeStrategy, TensorJob
from merginguriel_core.maths.spherical import gram_matrix, slerp_coefficients, spherical_coefficients
from merginguriel_core.maths.tensors import weighted_average, weighted_sum
from merginguriel_core.params import Param

if TYPE_CHECKING:
    import torch

    from merginguriel_core.interfaces import LabelledData
else:
    from merginguriel_core.lazy import torch


class SlerpStrategy(MergeStrategy):
    keeps_agreement = True  # agreed inputs merge to themselves
    name = "slerp"
    description = (
        "mergekit's SLERP of two models: the raw tensors interpolated at t (default: the second model's weight) "
        "with the angle between their directions; linear where nearly colinear."
    )
    reference = "https://github.com/arcee-ai/mergekit"
    params = (
        Param("t", float, None, "interpolation point: 0 the first source (highest weight), 1 the second; "
              "default: the second source's weight", minimum=0.0, maximum=1.0),
    )

    def check(self, params: Mapping[str, Any], num_models: int, data: LabelledData | None) -> None:
        if num_models > 2:
            raise ConfigError(
                f"strategy 'slerp' interpolates exactly 2 models, got {num_models}; "
                f"use --strategy karcher for the spherical mean of more"
            )

    def tensor_statistics(self, job: TensorJob) -> tuple[float, float] | None:
        if len(job.weights) < 2:  # one model: itself
            return None
        t = job.params["t"]
        if t is None:
            t = float(job.weights[1] / job.weights.sum())
        return slerp_coefficients(gram_matrix((chunk.sources for chunk in job.chunks()), 2), t)

    def merge_chunk(self, chunk: Chunk, statistics: tuple[float, float] | None) -> torch.Tensor:
        if statistics is None:
            return chunk.sources[0].clone()
        return weighted_sum(chunk.sources, torch.tensor(statistics, dtype=torch.float64))


class KarcherStrategy(MergeStrategy):
    keeps_agreement = True  # agreed inputs merge to themselves
    name = "karcher"
    description = (
        "Spherical mean: the weighted Karcher mean of the directions on the sphere (SLERP of the directions for two "
        "models, at t, default the second model's weight share), norms interpolated linearly."
    )
    reference = "https://en.wikipedia.org/wiki/Fr%C3%A9chet_mean"
    params = (
        Param("t", float, None, "interpolation point between the first (t=0) and second (t=1) source; "
              "default: from the weights; needs exactly 2 sources", minimum=0.0, maximum=1.0),
    )

    def check(self, params: Mapping[str, Any], num_models: int, data: LabelledData | None) -> None:
        if params["t"] is not None and num_models != 2:
            raise ConfigError(
                f"karcher t={params['t']} needs exactly 2 source models, got {num_models}; "
                f"omit t to take the spherical mean of all sources by their weights"
            )

    def _weights(self, job_or_chunk) -> torch.Tensor:
        t = job_or_chunk.params["t"]
        if t is None:
            return job_or_chunk.weights
        return torch.tensor([1 - t, t], dtype=job_or_chunk.weights.dtype, device=job_or_chunk.weights.device)

    def tensor_statistics(self, job: TensorJob) -> torch.Tensor | None:
        gram = gram_matrix((chunk.sources for chunk in job.chunks()), len(job.weights))
        return spherical_coefficients(gram, self._weights(job).cpu())

    def merge_chunk(self, chunk: Chunk, statistics: torch.Tensor | None) -> torch.Tensor:
        weights = self._weights(chunk)
        if statistics is None:  # (nearly) colinear, zero or opposite: linear interpolation
            return weighted_average(chunk.sources, weights)
        return weighted_sum(chunk.sources, statistics.to(torch.float32))


@hookimpl
def register_strategies(register):
    register(SlerpStrategy())
    register(KarcherStrategy())
