"""Similarity to weights: the pure maths of the built-in signal-keeping weightings
(``proportional``, ``softmax``, ``local_sinkhorn``, ``learned``; see
:mod:`merginguriel_core.signal_weighting`). Was part of ``merginguriel_plugins.signal_weightings``.

Arrays in, arrays out (``numpy``); a :class:`~merginguriel_core.errors.ConfigError` where the
weights are undefined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from merginguriel_core.errors import ConfigError
from merginguriel_core.similarity import sinkhorn

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


def proportional_weights(similarity: np.ndarray, power: float) -> np.ndarray:
    """``s^power`` normalised to sum 1 (``power = 0``: equal weights)."""
    raised = np.power(np.asarray(similarity, dtype=np.float64), power)
    total = raised.sum()
    if not total > 0:
        if np.any(np.asarray(similarity) > 0):
            raise ConfigError(f"similarity^{power:g} underflows to 0 for every candidate; choose a smaller power")
        raise ConfigError("every candidate has similarity 0 to the target; proportional weights are undefined")
    return raised / total


def softmax_weights(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """``exp(s / T)`` normalised to sum 1 (computed stably)."""
    scaled = np.asarray(similarity, dtype=np.float64) / temperature
    exps = np.exp(scaled - scaled.max())
    return exps / exps.sum()


def local_sinkhorn_weights(block: np.ndarray, iterations: int, include_target: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sinkhorn on ``block`` (row/column 0 the target, then the other candidates), diagonal
    zeroed unless ``include_target`` (then the target is a candidate too, weighing itself).

    Returns the target's row after Sinkhorn (the candidates' columns: the target's own first
    when ``include_target``) and the same renormalised.
    """
    values = np.array(block, dtype=np.float64)
    if not include_target:
        np.fill_diagonal(values, 0.0)
    row = sinkhorn(values, iterations)[0, 0 if include_target else 1:]
    total = row.sum()
    if not total > 0:
        raise ConfigError("Sinkhorn over the candidates left the target's row all zero")
    return row, row / total


def fit_accuracy(similarity: np.ndarray, accuracy: np.ndarray) -> tuple[float, float]:
    """Least-squares ``accuracy ≈ a + b·similarity``; returns ``(a, b)``."""
    x = np.asarray(similarity, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ConfigError(
            f"the N×N matrix gives {x.size} (source, target) pairs with distinct similarities; "
            "at least 2 are needed to fit accuracy against similarity"
        )
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)
