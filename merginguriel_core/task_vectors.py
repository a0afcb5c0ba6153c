"""The task-vector family of merge strategies: one configurable class covers every member.

(Was ``merginguriel_plugins.task_vectors``.) Each member is registered by the built-in
plugin of its method family (``plugins/task_arithmetic.py``, ``ties.py``, ``dare.py``,
``breadcrumbs.py``, ``della.py``); a third-party plugin can configure its own member.

Every member computes task vectors δᵢ = θᵢ − θ_base, optionally sparsifies each one
(magnitude top-k, random drop, magnitude band, magnitude-ranked sampling), optionally keeps
only entries that agree with an elected sign, combines them with the per-model weights wᵢ,
and adds the result, scaled by λ (``scaling``), back to the base:

| strategy          | sparsification                      | combination                      |
|-------------------|-------------------------------------|----------------------------------|
| task_arithmetic   | none                                | Σ wᵢ δᵢ                          |
| ties              | top ``density`` by magnitude        | sign election, weighted disjoint mean |
| dare, dare_linear | random drop, rescale 1/density      | Σ wᵢ δ̃ᵢ                          |
| dare_ties         | random drop, rescale 1/density      | sign election, weighted disjoint mean |
| breadcrumbs       | drop top ``gamma`` and the smallest | Σ wᵢ δ̃ᵢ                          |
| breadcrumbs_ties  | drop top ``gamma`` and the smallest | sign election, weighted disjoint mean |
| della             | MagPrune sampling, rescale 1/p      | sign election, weighted disjoint mean |
| della_linear      | MagPrune sampling, rescale 1/p      | Σ wᵢ δ̃ᵢ                          |

A tensor the base model lacks (e.g. a freshly initialised classifier head) has no task
vector: it is merged by weighted average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Chunk, MergeStrategy, TensorJob
from merginguriel_core.maths import tensors
from merginguriel_core.maths.magnitude import kth_largest
from merginguriel_core.params import Param

if TYPE_CHECKING:
    import torch

    from merginguriel_core.interfaces import LabelledData
else:
    from merginguriel_core.lazy import torch

SCALING = Param("scaling", float, 1.0, "λ: multiplies the combined task vector before it is added to the base", minimum=0.0)


def density_param(default: float, meaning: str) -> Param:
    """The ``density`` param of a member: a fraction in (0, 1]."""
    return Param("density", float, default, meaning, minimum=0.0, min_inclusive=False, maximum=1.0)


@dataclass(frozen=True)
class Thresholds:
    """Per-model magnitude band [low, high) of one tensor."""

    low: torch.Tensor
    high: torch.Tensor


class TaskVectorStrategy(MergeStrategy):
    """A member of the task-vector family, configured by sparsification and consensus.

    ``sparsification``: ``None`` (task arithmetic), ``"magnitude"`` (TIES' top-k),
    ``"random"`` (DARE's drop and rescale), ``"breadcrumbs"`` (a magnitude band) or
    ``"della"`` (MagPrune sampling); ``consensus``: TIES' sign election and disjoint mean
    instead of the weighted sum. ``params`` are the member's own; ``scaling`` is added.
    """
    keeps_agreement = True  # agreed inputs merge to themselves

    needs_base = True

    def __init__(self, name: str, description: str, reference: str, sparsification: str | None,
                 consensus: bool, params: tuple[Param, ...]):
        self.name = name
        self.description = description
        self.reference = reference
        self.sparsification = sparsification
        self.consensus = consensus
        self.random = sparsification in ("random", "della")  # DARE and DELLA draw their masks
        self.params = (*params, SCALING)

    def check(self, params: Mapping[str, Any], num_models: int, data: LabelledData | None) -> None:
        if self.sparsification == "della":
            density, epsilon = params["density"], params["epsilon"]
            if not (density - epsilon > 0 and density + epsilon <= 1):
                raise ConfigError(
                    f"strategy {self.name!r}: density ± epsilon must lie in (0, 1], got density={density}, "
                    f"epsilon={epsilon}"
                )

    # ---------------------------------------------------------------- first pass
    def tensor_statistics(self, job: TensorJob) -> Thresholds | None:
        if not job.has_base or self.sparsification not in ("magnitude", "breadcrumbs"):
            return None
        numel = math.prod(job.shape) if job.shape else 1
        k = len(job.weights)
        density = job.params["density"]
        keep = max(1, int(density * numel))  # as peft and mergekit count it

        def magnitudes():
            for chunk in job.chunks():
                yield [torch.sub(source, chunk.base).abs_() for source in chunk.sources]

        if self.sparsification == "magnitude":
            low = kth_largest(magnitudes, [(i, keep) for i in range(k)], numel)
            return Thresholds(torch.tensor(low), torch.full((k,), math.inf))
        top = int(job.params["gamma"] * numel)
        top = max(0, min(top, numel - keep))
        values = kth_largest(magnitudes, [(i, r) for i in range(k) for r in (top, top + keep)], numel)
        high, low = torch.tensor(values[0::2]), torch.tensor(values[1::2])
        # Never let the band drop every non-zero entry (ties at the top, or a delta whose
        # few non-zero entries are all "outliers"): then keep the outliers too.
        kept_nonzero = torch.zeros(k, dtype=torch.int64)
        for chunk_magnitudes in magnitudes():
            for i, m in enumerate(chunk_magnitudes):
                kept_nonzero[i] += int(((m >= low[i]) & (m < high[i]) & (m > 0)).sum())
        high = torch.where(kept_nonzero > 0, high, torch.full_like(high, math.inf))
        return Thresholds(low, high)

    # ---------------------------------------------------------------- merge pass
    def merge_chunk(self, chunk: Chunk, statistics: Thresholds | None) -> torch.Tensor:
        if chunk.base is None:
            return tensors.weighted_average(chunk.sources, chunk.weights)
        params = chunk.params
        deltas = []
        for index, source in enumerate(chunk.sources):
            delta = source - chunk.base
            if self.sparsification in ("magnitude", "breadcrumbs"):
                delta.mul_(tensors.magnitude_band_mask(delta, float(statistics.low[index]), float(statistics.high[index])))
            elif self.sparsification == "random":
                density = params["density"]
                delta.mul_(tensors.dare_mask(delta.shape, density, chunk.generator, delta.device))
                if params["rescale"]:
                    delta.div_(density)
            elif self.sparsification == "della":
                keep = tensors.della_keep_probabilities(delta, params["density"], params["epsilon"])
                draws = torch.rand(delta.shape, generator=chunk.generator, device=delta.device)
                delta = torch.where(draws < keep, delta / keep, 0.0)
            deltas.append(delta)
        if self.consensus:
            combined = tensors.disjoint_weighted_mean(deltas, chunk.weights, tensors.elect_sign(deltas, chunk.weights))
        else:
            combined = tensors.weighted_sum(deltas, chunk.weights)
        return combined.mul_(params["scaling"]).add_(chunk.base)


RESCALE = Param("rescale", bool, True, "divide surviving entries by density (DARE's rescaling)")
GAMMA = Param("gamma", float, 0.01, "fraction of the largest-magnitude entries dropped as outliers",
              minimum=0.0, maximum=1.0, max_inclusive=False)
EPSILON = Param("epsilon", float, 0.15, "spread of keep probabilities around density, by magnitude rank",
                minimum=0.0, min_inclusive=False, maximum=0.5)
