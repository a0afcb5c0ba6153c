"""Built-in strategies ``breadcrumbs`` and ``breadcrumbs_ties``: Model Breadcrumbs' magnitude band
(see :mod:`merginguriel_core.task_vectors`)."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.task_vectors import GAMMA, TaskVectorStrategy, density_param

KEPT = "fraction of each task vector kept, below the gamma outliers"

STRATEGIES = (
    TaskVectorStrategy(
        "breadcrumbs", "Model Breadcrumbs: drop each task vector's largest (gamma) and smallest entries, weighted sum.",
        "https://arxiv.org/abs/2312.06795", "breadcrumbs", False, (density_param(0.9, KEPT), GAMMA)),
    TaskVectorStrategy(
        "breadcrumbs_ties", "Model Breadcrumbs masks, then TIES sign election and weighted disjoint mean.",
        "https://arxiv.org/abs/2312.06795", "breadcrumbs", True, (density_param(0.9, KEPT), GAMMA)),
)


@hookimpl
def register_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)
