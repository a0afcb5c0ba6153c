"""Pure tensor maths behind the built-in merge strategies; no plugin wiring here.

(Was ``merginguriel_plugins.tensor_maths``.)

Conventions: ``deltas`` are task vectors θᵢ − θ_base stacked as (K, ...), ``weights`` is a
(K,) tensor of non-negative per-model weights (the URIEL weights, summing to 1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch


def _expand(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (K,) weights to broadcast against a (K, ...) stack."""
    return weights.reshape(-1, *([1] * (like.dim() - 1)))


def weighted_average(tensors: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Σ wᵢ·tᵢ / Σ wᵢ over aligned tensors.

    Args:
        tensors: K tensors of one shape.
        weights: shape (K,), non-negative, not all zero.
    Returns:
        A tensor of the common shape.
    """
    if len(tensors) != weights.numel():
        raise ValueError(f"got {len(tensors)} tensors but {weights.numel()} weights")
    total = weights.sum()
    if not bool(total > 0):
        raise ValueError(f"weights must sum to a positive number, got {float(total)}")
    merged = torch.zeros_like(tensors[0])
    for tensor, weight in zip(tensors, weights):
        merged.add_(tensor, alpha=float(weight))
    return merged.div_(total)


# ------------------------------------------------------------------------ sparsification
# Each function takes one model's task vector: the strategies loop over models, so their
# temporaries are the size of one chunk, not K of them.
def magnitude_band_mask(delta: torch.Tensor, low: float, high: float = math.inf) -> torch.Tensor:
    """Boolean mask of the entries whose magnitude lies in [low, high)."""
    magnitude = delta.abs()
    mask = magnitude >= low
    if high != math.inf:
        mask &= magnitude < high
    return mask


def dare_mask(shape: torch.Size, density: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Bernoulli(density) keep-mask: each entry survives with probability ``density``."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if density == 1:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return torch.rand(shape, generator=generator, device=device) < density


def della_keep_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune keep probabilities for one task vector, ranked within each row.

    The smallest-magnitude entry of a row is kept with probability ``density - epsilon``, the
    largest with ``density + epsilon``, linearly in rank between (Deep et al., 2024).
    A 1-D tensor is one row; a 0-d tensor is kept with probability ``density``.
    """
    if not (0 < density - epsilon and density + epsilon <= 1):
        raise ValueError(f"density ± epsilon must lie in (0, 1], got density={density}, epsilon={epsilon}")
    if delta.dim() == 0:
        return torch.full_like(delta, density)
    rows = delta.reshape(-1, delta.shape[-1])
    width = rows.shape[-1]
    ranks = rows.abs().argsort(dim=-1).argsort(dim=-1).to(delta.dtype)  # 0 = smallest
    scaled = ranks.div_(width - 1) if width > 1 else ranks.fill_(0.5)
    return scaled.mul_(2 * epsilon).add_(density - epsilon).reshape(delta.shape)


# ------------------------------------------------------------------- consensus and merge
def weighted_sum(deltas: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Σ wᵢ δᵢ."""
    total = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights):
        total.add_(delta, alpha=float(weight))
    return total


def elect_sign(deltas: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """TIES sign election: +1 where Σ wᵢ δᵢ >= 0, else -1 (the weighted "total mass" rule)."""
    return weighted_sum(deltas, weights).ge_(0).mul_(2).sub_(1)


def disjoint_weighted_mean(deltas: Sequence[torch.Tensor], weights: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Σᵢ wᵢ δᵢ / Σᵢ wᵢ over the models whose entry is non-zero and has the elected ``sign``
    (0 where no model qualifies). Overwrites ``deltas`` (each is zeroed where it disagrees).

    With every entry agreeing and weights summing to 1 this is Σ wᵢ δᵢ (task arithmetic).
    """
    numerator = torch.zeros_like(deltas[0])
    denominator = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights):
        agree = torch.mul(delta, sign).gt_(0)  # non-zero and of the elected sign, as 1.0/0.0
        denominator.add_(agree, alpha=float(weight))
        numerator.add_(delta.masked_fill_(agree == 0, 0.0), alpha=float(weight))  # not delta·agree: inf·0
    # Where no model agrees the numerator is 0 too, so 0 / tiny = 0.
    return numerator.div_(denominator.clamp_min_(torch.finfo(numerator.dtype).tiny))


# ------------------------------------------------------------- importance-weighted means
def importance_weighted_average(
    tensors: torch.Tensor, importances: torch.Tensor, weights: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Fisher merging: Σ wᵢ (Fᵢ + ε) θᵢ / Σ wᵢ (Fᵢ + ε), element-wise.

    Args:
        tensors: (K, ...) parameters θᵢ.
        importances: (K, ...) non-negative importances Fᵢ (diagonal Fisher, or a proxy).
        weights: (K,) per-model weights.
        epsilon: added to every importance, so entries no model finds important fall back
            to the weighted average (and nothing divides by zero).
    """
    scaled = (importances + epsilon) * _expand(weights, tensors)
    return (scaled * tensors).sum(dim=0) / scaled.sum(dim=0)


def regmean_rows(rows: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], weights: torch.Tensor,
                 system: torch.Tensor) -> torch.Tensor:
    """RegMean for rows of linear weights W (out, in): (Σ wᵢ Wᵢ G̃ᵢ) (Σ wᵢ G̃ᵢ)⁻¹.

    Args:
        rows: K tensors (r, in): the same output rows of each model's weight.
        grams: K (in, in) regularised Gram matrices G̃ᵢ of the layer's inputs.
        weights: (K,) per-model weights.
        system: LU factorisation (``torch.linalg.lu_factor``) of Σ wᵢ G̃ᵢ.
    Returns:
        (r, in) merged rows.
    """
    right = sum(float(w) * (row @ gram) for row, gram, w in zip(rows, grams, weights))
    lu, pivots = system
    # X A = R  <=>  Aᵀ Xᵀ = Rᵀ, and A is symmetric.
    return torch.linalg.lu_solve(lu, pivots, right.T).T


def regularised_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """RegMean's G̃ = α·G + (1 − α)·diag(G): off-diagonal entries scaled by α."""
    return alpha * gram + (1 - alpha) * torch.diag(torch.diagonal(gram))
