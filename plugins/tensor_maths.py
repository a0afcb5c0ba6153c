"""Pure tensor maths behind the built-in merge strategies; no plugin wiring here."""

from __future__ import annotations

from typing import Sequence

import torch


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
