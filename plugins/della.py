"""Built-in strategies ``della`` and ``della_linear``: DELLA's MagPrune sampling (see
:mod:`merginguriel_core.task_vectors`)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.task_vectors import EPSILON, TaskVectorStrategy, density_param

MEAN_KEEP = "mean keep probability of a task-vector entry"

STRATEGIES = (
    TaskVectorStrategy(
        "della", "DELLA: MagPrune (keep probability grows with magnitude rank), rescale 1/p, elect signs, fuse.",
        "https://arxiv.org/abs/2406.11617", "della", True, (density_param(0.7, MEAN_KEEP), EPSILON)),
    TaskVectorStrategy(
        "della_linear", "DELLA's MagPrune sampling and rescaling, then a weighted sum (no sign election).",
        "https://arxiv.org/abs/2406.11617", "della", False, (density_param(0.7, MEAN_KEEP), EPSILON)),
)


@hookimpl
def register_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)
