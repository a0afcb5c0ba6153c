"""Built-in strategies ``fisher`` and ``fisher_simple``: importance-weighted averages.

``fisher`` (Matena & Raffel, 2022) weights each parameter of each model by its diagonal
empirical Fisher information, estimated once per model from labelled examples and stored
as safetensors for reuse; ``fisher_simple`` uses the parameter's magnitude as a free proxy.
Both merge θ = Σ wᵢ (Fᵢ + ε) θᵢ / Σ wᵢ (Fᵢ + ε), with the per-model weights wᵢ.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeContext, MergeStrategy
from merginguriel_core.params import Param
from merginguriel_core.statistics import StatisticsFiles, empirical_fisher, examples_param, prepare_statistics
from merginguriel_core.maths import tensors as tm

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch

EPSILON = Param("epsilon", float, 1e-8, "added to every importance (entries no model finds important average)",
                minimum=0.0, min_inclusive=False)


class FisherStrategy(MergeStrategy):
    keeps_agreement = True  # agreed inputs merge to themselves
    name = "fisher"
    description = "Fisher merging: parameters weighted by each model's diagonal empirical Fisher (from labelled data)."
    reference = "https://arxiv.org/abs/2111.09832"
    params = (EPSILON, examples_param("the Fisher information"))
    needs_data = True

    def prepare(self, context: MergeContext) -> StatisticsFiles:
        count, max_length = context.params["examples"], context.data.max_length

        def compute(model_dir: Path, examples) -> dict[str, torch.Tensor]:
            return empirical_fisher(model_dir, examples.texts, examples.labels, context.device, max_length,
                                    context.progress)

        return prepare_statistics("fisher", context, count, {"max_length": max_length}, compute)

    def merge_chunk(self, chunk: Chunk, statistics: Any) -> torch.Tensor:
        fishers = chunk.prepared.rows(chunk.name, chunk.start, chunk.stop, chunk.sources[0].dim() == 0,
                                      chunk.sources[0].device)
        if fishers is None:  # a buffer or frozen tensor without Fisher: weighted average
            return tm.weighted_average(chunk.sources, chunk.weights)
        return tm.importance_weighted_average(torch.stack(chunk.sources), torch.stack(fishers), chunk.weights,
                                              chunk.params["epsilon"])


class FisherSimpleStrategy(MergeStrategy):
    keeps_agreement = True  # agreed inputs merge to themselves
    name = "fisher_simple"
    description = "Importance-weighted average with |θ|^power as the importance (a data-free Fisher proxy)."
    reference = "https://arxiv.org/abs/2111.09832"
    params = (
        Param("power", float, 1.0, "importance = |θ| ** power", minimum=0.0, min_inclusive=False),
        EPSILON,
    )

    def merge_chunk(self, chunk: Chunk, statistics: Any) -> torch.Tensor:
        stacked = torch.stack(chunk.sources)
        importance = stacked.abs() ** chunk.params["power"]
        return tm.importance_weighted_average(stacked, importance, chunk.weights, chunk.params["epsilon"])


@hookimpl
def register_strategies(register):
    register(FisherStrategy())
    register(FisherSimpleStrategy())
