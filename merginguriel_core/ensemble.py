"""URIEL-guided ensembles: combine the selected source models' outputs at inference time.

:func:`run_ensemble` evaluates one voting method for one target, next to the two baselines:
the best source of the same set, and the best overall zero-shot source (the best model
other than the target's own). All logits go through the :class:`Predictor` and its cache, so
a comparison over many targets and methods runs each model on each split at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import LogitsCache, Predictor, gold_ids, label_space_for, score
from merginguriel_core.interfaces import Dataset, Evaluator, VotingMethod

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


@dataclass
class EnsembleResult:
    """One (target, voting method) outcome."""

    target: str
    method: str
    sources: list[tuple[str, float]]
    metrics: dict[str, float]
    best_source: tuple[str, float]
    best_zero_shot: tuple[str, float] | None
    predictions: np.ndarray
    examples: Examples
    #: The label names in id order: ``label_space[predictions[i]]`` is example i's predicted label.
    label_space: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "voting_method": self.method,
            "sources": [{"locale": l, "weight": w} for l, w in self.sources],
            **self.metrics,
            "best_source": {"locale": self.best_source[0], "accuracy": self.best_source[1]},
            "best_zero_shot": None if self.best_zero_shot is None
            else {"locale": self.best_zero_shot[0], "accuracy": self.best_zero_shot[1]},
        }


def source_accuracies(models: Mapping[str, Path], locales: list[str], examples: Examples, label_space: list[str],
                      predictor: Predictor) -> dict[str, float]:
    """Accuracy of each listed model on ``examples`` (logits from the cache when present)."""
    gold = gold_ids(examples, label_space)
    return {loc: float(np.mean(predictor.logits(models[loc], examples, label_space).argmax(-1) == gold)) for loc in locales}


@dataclass(frozen=True)
class EnsemblePlan:
    """An ensemble, resolved and checked by :func:`merginguriel_core.plan.plan_ensemble`.

    ``sources`` are ``(locale, weight)`` with weights summing to 1; ``models`` every model
    folder by locale (the sources' and the zero-shot baseline's pool); ``cache_dir`` the
    logits cache (``None``: no cache).
    """

    target: str
    sources: tuple[tuple[str, float], ...]
    models: Mapping[str, Path]
    method: VotingMethod
    dataset: Dataset
    location: str | None
    split: str = "test"
    evaluators: tuple[Evaluator, ...] = ()
    zero_shot_pool: tuple[str, ...] | None = None
    batch_size: int = 64
    max_length: int = 128
    device: Any = "cpu"
    cache_dir: Path | None = None
    progress: bool = False
    selection: Any = None

    def predictor(self) -> Predictor:
        """A :class:`Predictor` with this plan's device, batching and cache (share one across
        plans, as ``mu compare-ensembles`` does, to run each model on each split once)."""
        return Predictor(LogitsCache(self.cache_dir), self.device, self.batch_size, self.max_length, self.progress)


def run_ensemble(plan: EnsemblePlan, predictor: Predictor | None = None) -> EnsembleResult:
    """Combine ``plan.sources`` on the target's split with ``plan.method``, next to the two
    baselines (the best source of the set, the best zero-shot model of the pool).

    Labels are in :func:`~merginguriel_core.evaluation.label_space_for`'s order over every
    model used. The plan is only read.
    """
    predictor = predictor or plan.predictor()
    target, models, sources = plan.target, plan.models, list(plan.sources)
    if not sources:
        raise ConfigError(f"no source models for target {target}")
    pool_from = plan.zero_shot_pool if plan.zero_shot_pool is not None else list(models)
    pool = [loc for loc in pool_from if loc != target]
    used = list(dict.fromkeys([loc for loc, _ in sources] + pool))
    label_space = label_space_for(plan.dataset, plan.location, [models[loc] for loc in used])
    examples = plan.dataset.load(plan.location, target, plan.split)
    gold = gold_ids(examples, label_space)
    logits = np.stack([predictor.logits(models[loc], examples, label_space) for loc, _ in sources])
    weights = np.array([w for _, w in sources], dtype=np.float64)
    scores = plan.method.combine(logits, weights, {})
    if scores.shape != (len(examples), len(label_space)):
        raise ConfigError(f"voting method {plan.method.name!r} returned shape {scores.shape}, expected "
                          f"{(len(examples), len(label_space))}")
    predictions = scores.argmax(-1)
    metrics = score(predictions, gold, len(label_space), plan.evaluators)
    own = source_accuracies(models, [loc for loc, _ in sources], examples, label_space, predictor)
    best_of_set = max(own.items(), key=lambda item: (item[1], -list(own).index(item[0])))
    overall = source_accuracies(models, pool, examples, label_space, predictor) if pool else {}
    best_overall = max(overall.items(), key=lambda item: (item[1], -pool.index(item[0]))) if overall else None
    return EnsembleResult(target, plan.method.name, sources, metrics, best_of_set, best_overall, predictions, examples,
                          label_space)
