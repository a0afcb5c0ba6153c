"""Built-in strategy ``regmean``: regression mean for linear layers (Jin et al., 2023).

For every linear layer, W = (Σ wᵢ Wᵢ G̃ᵢ)(Σ wᵢ G̃ᵢ)⁻¹, where Gᵢ is the Gram matrix XᵢᵀXᵢ of
that layer's inputs in model i over a sample of its data (per token, averaged), and
G̃ = α·G + (1 − α)·diag(G). Every other tensor (embeddings, biases, LayerNorm) is the
weighted average. Gram matrices are computed once per model and stored as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeContext, MergeStrategy, TensorJob
from merginguriel_core.params import Param
from merginguriel_core.statistics import StatisticsFiles, examples_param, input_grams, prepare_statistics
from merginguriel_core.maths import tensors as tm

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch


class RegMeanStrategy(MergeStrategy):
    name = "regmean"
    description = "RegMean: linear layers solve (Σ wᵢWᵢG̃ᵢ)(Σ wᵢG̃ᵢ)⁻¹ with input Gram matrices; the rest averaged."
    reference = "https://arxiv.org/abs/2212.09849"
    params = (
        Param("alpha", float, 0.9, "scale of the Gram matrices' off-diagonal entries (1 = plain RegMean)",
              minimum=0.0, maximum=1.0),
        Param("ridge", float, 1e-6, "added to the diagonal, relative to its mean, so the system is invertible",
              minimum=0.0),
        examples_param("the Gram matrices"),
        Param("batch_size", int, 16, "examples per forward pass while computing the Gram matrices", minimum=1),
    )
    needs_data = True
    # The ridge term shrinks agreed weights: W·G̃·(G̃ + ridge·I)⁻¹ is not W.
    keeps_agreement = False

    def prepare(self, context: MergeContext) -> StatisticsFiles:
        count, max_length, batch_size = context.params["examples"], context.data.max_length, context.params["batch_size"]

        def compute(model_dir: Path, examples) -> dict[str, torch.Tensor]:
            return input_grams(model_dir, examples.texts, examples.labels, context.device, max_length, batch_size,
                               context.progress)

        return prepare_statistics("regmean", context, count, {"max_length": max_length}, compute)

    def tensor_statistics(self, job: TensorJob) -> Any:
        files: StatisticsFiles = job.prepared
        if len(job.shape) != 2:
            return None
        grams = files.whole(job.name, job.weights.device)
        if grams is None:
            return None
        alpha, ridge = job.params["alpha"], job.params["ridge"]
        grams = [tm.regularised_gram(g, alpha) for g in grams]
        system = sum(float(w) * g for w, g in zip(job.weights, grams))
        system = system + ridge * torch.diagonal(system).mean().clamp_min(1e-12) * torch.eye(
            system.shape[0], device=system.device)
        return grams, torch.linalg.lu_factor(system)

    def merge_chunk(self, chunk: Chunk, statistics: Any) -> torch.Tensor:
        if statistics is None:
            return tm.weighted_average(chunk.sources, chunk.weights)
        grams, system = statistics
        return tm.regmean_rows(chunk.sources, grams, chunk.weights, system)


@hookimpl
def register_strategies(register):
    register(RegMeanStrategy())
