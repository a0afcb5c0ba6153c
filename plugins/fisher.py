"""Built-in strategies ``fisher`` and ``fisher_simple``: importance-weighted averages.

``fisher`` (Matena & Raffel, 2022) weights each parameter of each model by its diagonal
empirical Fisher information, estimated once per model from labelled examples and stored
as safetensors for reuse; ``fisher_simple`` uses the parameter's magnitude as a free proxy.
Both merge θ = Σ wᵢ (Fᵢ + ε) θᵢ / Σ wᵢ (Fᵢ + ε), with the per-model weights wᵢ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from merginguriel_core import hookimpl
from merginguriel_core.interfaces import Chunk, MergeContext, MergeStrategy
from merginguriel_core.io import TensorSource
from merginguriel_core.params import Param
from merginguriel_core.training import token_limit
from merginguriel_core.statistics import cached_statistics, label_ids, load_classifier, sample
from merginguriel_core.maths import tensors as tm

EPSILON = Param("epsilon", float, 1e-8, "added to every importance (entries no model finds important average)",
                minimum=0.0, min_inclusive=False)


def empirical_fisher(model_dir: Path, texts: list[str], labels: list[str], device: torch.device,
                     max_length: int, progress: bool) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean over examples of (∂ log p(yₙ|xₙ)/∂θ)², per parameter.

    One example per backward pass (the Fisher needs per-example gradients); gold labels.
    """
    from merginguriel_core.data import Examples

    model, tokenizer = load_classifier(model_dir, device)
    model.eval()  # no dropout: the Fisher of the deterministic model
    ids = label_ids(model, Examples(texts, labels, str(model_dir)))
    max_length = token_limit(model, max_length)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    for text, label in tqdm(list(zip(texts, ids)), desc=f"Fisher {model_dir.name}", disable=not progress, leave=False):
        model.zero_grad(set_to_none=True)
        batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length).to(device)
        log_probs = torch.log_softmax(model(**batch).logits, dim=-1)
        (-log_probs[0, label]).backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach() ** 2
    return {name: f / len(texts) for name, f in fisher.items()}


def examples_param(what: str) -> Param:
    """The ``examples`` param of a data-dependent strategy: how many examples per model."""
    return Param("examples", int, 256, f"labelled examples per model for {what} (drawn with the run's seed)",
                 minimum=1)


@dataclass
class StatisticsFiles:
    """Open per-model statistics files for the merge pass."""

    readers: list[TensorSource]
    paths: list[Path]
    reused: list[bool]

    def rows(self, name: str, start: int, stop: int, scalar: bool, device: torch.device) -> list[torch.Tensor] | None:
        if not all(name in reader for reader in self.readers):
            return None
        read = (lambda r: r.get(name)) if scalar else (lambda r: r.get_rows(name, start, stop))
        return [read(r).to(device=device, dtype=torch.float32) for r in self.readers]

    def whole(self, name: str, device: torch.device) -> list[torch.Tensor] | None:
        return self.rows(name, 0, 0, True, device)

    def describe(self) -> list[dict[str, Any]]:
        """For merge_details.json: which statistics files were used, and whether reused."""
        return [{"file": str(p), "reused": r} for p, r in zip(self.paths, self.reused)]

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def prepare_statistics(kind: str, context: MergeContext, count: int, settings: Mapping[str, Any], compute) -> StatisticsFiles:
    """Compute (or reuse) one statistics file per source model, from ``count`` examples of
    its labelled data (``context.data``), and open them."""
    data = context.data
    paths, reused = [], []
    for source in context.sources:
        examples = sample(data.examples(source.locale), count, data.seed)
        path, was_cached = cached_statistics(
            kind, source.locale, source.path, examples, settings, data.stats_dir,
            lambda source=source, examples=examples: compute(source.path, examples),
        )
        paths.append(path)
        reused.append(was_cached)
    return StatisticsFiles([TensorSource(p) for p in paths], paths, reused)


class FisherStrategy(MergeStrategy):
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
