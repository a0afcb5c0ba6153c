"""Built-in strategy ``regmean``: regression mean for linear layers (Jin et al., 2023).

For every linear layer, W = (Σ wᵢ Wᵢ G̃ᵢ)(Σ wᵢ G̃ᵢ)⁻¹, where Gᵢ is the Gram matrix XᵢᵀXᵢ of
that layer's inputs in model i over a sample of its data (per token, averaged), and
G̃ = α·G + (1 − α)·diag(G). Every other tensor (embeddings, biases, LayerNorm) is the
weighted average. Gram matrices are computed once per model and stored as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeContext, MergeStrategy, TensorJob
from merginguriel_core.params import Param
from merginguriel_core.training import token_limit
from merginguriel_core.statistics import label_ids, load_classifier
from merginguriel_core.maths import tensors as tm
from merginguriel_plugins.fisher import StatisticsFiles, examples_param, prepare_statistics


def input_grams(model_dir: Path, texts: list[str], labels: list[str], device: torch.device, max_length: int,
                batch_size: int, progress: bool) -> dict[str, torch.Tensor]:
    """Per linear layer ``<module>.weight``: Σ xxᵀ / (number of tokens) over the layer's inputs.

    Padding positions are left out, using the attention mask of the current batch.
    """
    from merginguriel_core.data import Examples

    model, tokenizer = load_classifier(model_dir, device)
    model.eval()
    label_ids(model, Examples(texts, labels, str(model_dir)))  # same label space check as Fisher
    max_length = token_limit(model, max_length)
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    current_mask: list[torch.Tensor] = []

    def hook(name: str):
        def record(module, inputs, output):
            x = inputs[0].detach()
            if x.dim() == 3:  # (batch, tokens, features): keep real tokens only
                x = x[current_mask[0].bool()]
            x = x.reshape(-1, x.shape[-1]).float()
            grams[name] = grams.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [module.register_forward_hook(hook(f"{name}.weight"))
               for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(texts), batch_size), desc=f"RegMean {model_dir.name}",
                              disable=not progress, leave=False):
                batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                  truncation=True, max_length=max_length).to(device)
                current_mask[:] = [batch["attention_mask"]]
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: gram / counts[name] for name, gram in grams.items()}


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
