"""Built-in strategies of the DARE family: ``dare``, ``dare_linear`` and ``dare_ties``.

Each drops every task-vector entry with probability 1 − ``density`` and divides the
survivors by ``density`` (Yu et al., 2024). ``dare`` (the seed's name) and ``dare_linear``
(mergekit's) then add the weighted sum Σ wᵢ δ̃ᵢ to the base; ``dare_ties`` applies TIES' sign
election and weighted disjoint mean. See :mod:`merginguriel_core.task_vectors`.
"""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.task_vectors import RESCALE, TaskVectorStrategy, density_param

SURVIVAL = "probability that an entry of a task vector survives"

STRATEGIES = (
    TaskVectorStrategy(
        "dare", "DARE: drop task-vector entries with probability 1 − density, rescale by 1/density, weighted sum "
        "(the same merge as dare_linear).",
        "https://arxiv.org/abs/2311.03099", "random", False, (density_param(0.5, SURVIVAL), RESCALE)),
    TaskVectorStrategy(
        "dare_linear", "DARE: drop task-vector entries with probability 1 − density, rescale, weighted sum.",
        "https://arxiv.org/abs/2311.03099", "random", False, (density_param(0.5, SURVIVAL), RESCALE)),
    TaskVectorStrategy(
        "dare_ties", "DARE drop-and-rescale, then TIES sign election and weighted disjoint mean.",
        "https://arxiv.org/abs/2311.03099", "random", True, (density_param(0.5, SURVIVAL), RESCALE)),
)


@hookimpl
def register_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)
