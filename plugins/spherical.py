"""Spherical averaging from Gram matrices: SLERP for two models, the weighted Karcher
(Riemannian) mean for more, and Model Stock's interpolation ratio.

All of it works on the K×K Gram matrix of the flattened tensors, which one streaming pass
accumulates; the merged tensor is then a linear combination Σ aᵢ xᵢ of the sources, written
in a second pass. No tensor is ever held K times in memory.
"""

from __future__ import annotations

import math

import torch

_COLINEAR = 1e-7   # angles below this (radians) count as the same direction


def spherical_coefficients(gram: torch.Tensor, weights: torch.Tensor, max_iter: int = 100,
                           tol: float = 1e-12) -> torch.Tensor | None:
    """Coefficients a with Σ aᵢ xᵢ = the weighted spherical mean of K vectors.

    The direction is the weighted Karcher mean of the unit vectors uᵢ = xᵢ/|xᵢ| on the
    sphere (for K=2 with weights (1−t, t) this is exactly SLERP at t); the length is the
    weighted mean of the norms Σ wᵢ|xᵢ|. The mean m = Σ cⱼ uⱼ stays in the span of the
    sources, so the Riemannian gradient iteration runs on the Gram matrix alone.

    Args:
        gram: (K, K) float64 Gram matrix ⟨xᵢ, xⱼ⟩.
        weights: (K,) non-negative weights summing to 1.
    Returns:
        (K,) float64 coefficients, or ``None`` when the spherical mean is undefined or
        degenerate (a zero vector, (nearly) colinear vectors, or opposite directions), in
        which case the caller should use the weighted average.
    """
    gram = gram.to(torch.float64)
    w = weights.to(torch.float64)
    norms = torch.sqrt(torch.clamp(torch.diagonal(gram), min=0))
    if bool((norms[w > 0] <= 1e-30).any()):
        return None
    active = w > 0
    if int(active.sum()) == 1:  # a single model: itself
        return active.to(torch.float64) / w.sum()
    unit = gram / torch.outer(norms, norms).clamp_min(1e-300)
    angles = torch.arccos(unit[active][:, active].clamp(-1, 1))
    if float(angles.max()) < _COLINEAR:
        return None
    scale = float((w * norms).sum())
    if int(active.sum()) == 2:  # SLERP, in closed form
        i, j = torch.nonzero(active).flatten().tolist()
        t = float(w[j] / (w[i] + w[j]))
        omega = float(torch.arccos(unit[i, j].clamp(-1, 1)))
        if math.pi - omega < _COLINEAR:
            return None
        c = torch.zeros_like(w)
        c[i], c[j] = math.sin((1 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)
        return scale * c / norms
    c = w.clone()
    length = torch.sqrt(c @ unit @ c)
    if float(length) < 1e-9:  # weighted mean of directions is ~0: antipodal, undefined
        return None
    c = c / length
    for _ in range(max_iter):
        cosines = (unit @ c).clamp(-1, 1)
        theta = torch.arccos(cosines)
        factor = torch.where(theta > 1e-12, theta / torch.sin(theta).clamp_min(1e-300), torch.ones_like(theta))
        # v = Σ wᵢ log_m(uᵢ) = Σ wᵢ fᵢ (uᵢ − cosθᵢ m), in coefficients over the uⱼ
        v = w * factor - (w * factor * cosines).sum() * c
        step = math.sqrt(max(float(v @ unit @ v), 0.0))
        if step < tol:
            break
        c = math.cos(step) * c + (math.sin(step) / step) * v
        c = c / torch.sqrt(c @ unit @ c)
    return scale * c / norms


def model_stock_ratio(gram: torch.Tensor, weights: torch.Tensor) -> float:
    """Model Stock's t = K·cosθ / (1 + (K−1)·cosθ) from the task vectors' Gram matrix.

    cosθ is the weighted mean (pair weights wᵢwⱼ) of the pairwise cosines between task
    vectors, clamped to [0, 1]; K counts the models with a non-zero weight. The merged
    tensor is t·(Σ wᵢ θᵢ) + (1 − t)·θ_base (Jang et al., 2024).
    """
    gram = gram.to(torch.float64)
    w = weights.to(torch.float64)
    k = int((w > 0).sum())
    if k < 2:
        return 1.0
    norms = torch.sqrt(torch.clamp(torch.diagonal(gram), min=0))
    if bool((norms[w > 0] <= 1e-30).any()):
        return 1.0  # a zero task vector: nothing to interpolate against, keep the average
    cos = gram / torch.outer(norms, norms).clamp_min(1e-300)
    pair = torch.outer(w, w)
    pair.fill_diagonal_(0)
    mean_cos = float((cos * pair).sum() / pair.sum())
    mean_cos = min(max(mean_cos, 0.0), 1.0)
    return k * mean_cos / (1 + (k - 1) * mean_cos)
