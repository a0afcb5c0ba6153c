"""Built-in strategy ``task_arithmetic``: θ_base + λ·Σ wᵢ(θᵢ − θ_base) (see
:mod:`merginguriel_core.task_vectors`)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.task_vectors import TaskVectorStrategy

STRATEGIES = (
    TaskVectorStrategy(
        "task_arithmetic", "θ_base + λ·Σ wᵢ(θᵢ − θ_base): weighted task arithmetic.",
        "https://arxiv.org/abs/2212.04089", None, False, ()),
)


@hookimpl
def register_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)
