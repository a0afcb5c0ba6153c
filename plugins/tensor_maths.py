"""Pure tensor maths behind the built-in merge strategies; no plugin wiring here.

Conventions: ``deltas`` are task vectors θᵢ − θ_base stacked as (K, ...), ``weights`` is a
(K,) tensor of non-negative per-model weights (the URIEL weights, summing to 1).
"""

from __future__ import annotations

from typing import Sequence

import torch


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
def magnitude_band_mask(deltas: torch.Tensor, low: torch.Tensor, high: torch.Tensor | None = None) -> torch.Tensor:
    """Keep entries whose magnitude lies in [low, high) per model.

    Args:
        deltas: (K, ...) task vectors.
        low: (K,) lower magnitude thresholds (kept when ``|δ| >= low``).
        high: (K,) upper thresholds (kept when ``|δ| < high``); ``None`` or ``inf`` = no upper bound.
    Returns:
        A boolean mask shaped like ``deltas``.
    """
    magnitude = deltas.abs()
    mask = magnitude >= _expand(low, deltas)
    if high is not None:
        mask &= magnitude < _expand(high, deltas)
    return mask


def dare_mask(shape: torch.Size, density: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Bernoulli(density) keep-mask: each entry survives with probability ``density``."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if density == 1:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return torch.rand(shape, generator=generator, device=device) < density


def della_keep_probabilities(deltas: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune keep probabilities, ranked by magnitude within each row.

    The smallest-magnitude entry of a row is kept with probability ``density - epsilon``, the
    largest with ``density + epsilon``, linearly in rank between (Deep et al., 2024).
    A 1-D tensor is one row.

    Args:
        deltas: (K, ...) task vectors.
    Returns:
        Probabilities shaped like ``deltas``.
    """
    if not (0 < density - epsilon and density + epsilon <= 1):
        raise ValueError(f"density ± epsilon must lie in (0, 1], got density={density}, epsilon={epsilon}")
    rows = deltas.reshape(deltas.shape[0], -1, deltas.shape[-1]) if deltas.dim() > 1 else deltas.reshape(-1, 1, 1)
    width = rows.shape[-1]
    ranks = rows.abs().argsort(dim=-1).argsort(dim=-1).to(deltas.dtype)  # 0 = smallest
    scaled = ranks / (width - 1) if width > 1 else torch.full_like(ranks, 0.5)
    return ((density - epsilon) + 2 * epsilon * scaled).reshape(deltas.shape)


# ------------------------------------------------------------------- consensus and merge
def elect_sign(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TIES sign election: the sign of the weighted sum of (sparsified) task vectors.

    Args:
        deltas: (K, ...) sparsified task vectors.
        weights: (K,) per-model weights.
    Returns:
        (...) tensor of +1/-1 (0 where the weighted sum is exactly 0 is mapped to +1).
    """
    total = (deltas * _expand(weights, deltas)).sum(dim=0)
    return torch.where(total >= 0, 1.0, -1.0).to(deltas.dtype)


def disjoint_weighted_mean(deltas: torch.Tensor, weights: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Σᵢ wᵢ·keepᵢ·δᵢ / Σᵢ wᵢ·keepᵢ per entry (0 where no model is kept).

    With every entry kept and weights summing to 1 this is Σ wᵢ δᵢ (task arithmetic).
    """
    expanded = _expand(weights, deltas)
    kept = keep.to(deltas.dtype)
    numerator = (deltas * kept * expanded).sum(dim=0)
    denominator = (kept * expanded).sum(dim=0)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(deltas.dtype).tiny), 0.0)


def weighted_sum(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ wᵢ δᵢ over the first dimension."""
    return (deltas * _expand(weights, deltas)).sum(dim=0)


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
