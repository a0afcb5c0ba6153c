"""Built-in strategy ``ties``: TIES-Merging (trim, elect signs, weighted disjoint mean; see
:mod:`merginguriel_core.task_vectors`)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.task_vectors import TaskVectorStrategy, density_param

STRATEGIES = (
    TaskVectorStrategy(
        "ties", "TIES: trim each task vector to its top-density magnitudes, elect signs, weighted disjoint mean.",
        "https://arxiv.org/abs/2306.01708", "magnitude", True,
        (density_param(0.2, "fraction of each task vector kept, by magnitude"),)),
)


@hookimpl
def register_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)
