"""Spherical interpolation from Gram matrices: mergekit's SLERP of two vectors, the weighted
Karcher (Riemannian) mean of K directions, and Model Stock's interpolation ratio.

(Was ``merginguriel_plugins.spherical``.) All of it works on the K×K Gram matrix of the
flattened tensors (:func:`gram_matrix`), which one streaming pass accumulates; the merged
tensor is then a linear combination Σ aᵢ xᵢ of the sources, written in a second pass. No
tensor is ever held K times in memory.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch

#: mergekit's threshold: directions whose |cos| exceeds it count as colinear, and SLERP
#: becomes the linear interpolation of the raw vectors.
DOT_THRESHOLD = 0.9995
#: mergekit's: a vector whose norm is at most this is used as it is, not normalised.
NORM_EPSILON = 1e-8
_COLINEAR = 1e-7   # angles below this (radians) count as the same direction


def gram_matrix(pieces: Iterable[Sequence[torch.Tensor]], k: int) -> torch.Tensor:
    """⟨xᵢ, xⱼ⟩ of K vectors that arrive in aligned pieces (each a sequence of K tensors of one
    shape, e.g. the same rows of K models), summed over the pieces: (K, K) float64 on the CPU.

    The products are taken in float64: angles between close fine-tunes need the precision.
    """
    gram = torch.zeros(k, k, dtype=torch.float64)
    for piece in pieces:
        rows = torch.stack(list(piece)).reshape(k, -1).to(torch.float64)
        gram += (rows @ rows.T).cpu()
    return gram


def slerp_coefficients(gram: torch.Tensor, t: float) -> tuple[float, float]:
    """(s₀, s₁) with s₀·v₀ + s₁·v₁ = mergekit's ``slerp(t, v₀, v₁)``, from the 2×2 Gram matrix.

    mergekit treats each tensor as one flat vector. It takes the cosine of the angle θ
    between the directions v/|v| (a vector of norm at most :data:`NORM_EPSILON` is used
    unnormalised); where |cos θ| > :data:`DOT_THRESHOLD` the vectors count as colinear and
    the result is the linear interpolation (1 − t)·v₀ + t·v₁; otherwise it interpolates the
    **raw** vectors with the angle of their directions:

        slerp = sin((1 − t)θ)/sin θ · v₀ + sin(tθ)/sin θ · v₁.

    Args:
        gram: (2, 2) Gram matrix ⟨vᵢ, vⱼ⟩ (float64 recommended).
        t: 0 gives v₀, 1 gives v₁ (mergekit's ``t``: the weight of the second vector).
    """
    gram = gram.to(torch.float64)
    norms = [math.sqrt(max(float(gram[i, i]), 0.0)) for i in (0, 1)]
    scale = [n if n > NORM_EPSILON else 1.0 for n in norms]
    cos = float(gram[0, 1]) / (scale[0] * scale[1])
    if abs(cos) > DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    return math.sin((1 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta


def spherical_coefficients(gram: torch.Tensor, weights: torch.Tensor, max_iter: int = 100,
                           tol: float = 1e-12) -> torch.Tensor | None:
    """Coefficients a with Σ aᵢ xᵢ = the weighted spherical mean of K vectors.

    The direction is the weighted Karcher mean of the unit vectors uᵢ = xᵢ/|xᵢ| on the
    sphere (for K=2 with weights (1−t, t) this is SLERP of the directions at t); the length
    is the weighted mean of the norms Σ wᵢ|xᵢ| (the ``karcher`` strategy; mergekit's SLERP,
    which interpolates the raw vectors, is :func:`slerp_coefficients`). The mean
    m = Σ cⱼ uⱼ stays in the span of the sources, so the Riemannian gradient iteration runs
    on the Gram matrix alone.

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
    if int(active.sum()) == 2:  # SLERP of the two directions, in closed form
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
