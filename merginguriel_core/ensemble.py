"""URIEL-guided ensembles: combine the selected source models' outputs at inference time.

:func:`run_ensemble` evaluates one voting method for one target, next to the two baselines:
the best source of the same set, and the best overall zero-shot source (the best model
other than the target's own). All logits go through the :class:`Predictor` and its cache, so
a comparison over many targets and methods runs each model on each split at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import Predictor, gold_ids, label_space_for, score
from merginguriel_core.interfaces import Dataset, Evaluator, VotingMethod


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


def run_ensemble(
    *,
    target: str,
    sources: list[tuple[str, float]],
    models: Mapping[str, Path],
    method: VotingMethod,
    dataset: Dataset,
    location: str | None,
    split: str,
    evaluators: list[Evaluator],
    predictor: Predictor,
    zero_shot_pool: list[str] | None = None,
) -> EnsembleResult:
    """Combine ``sources`` (locale, weight) on ``target``'s split with ``method``.

    ``zero_shot_pool``: the models the best-overall-zero-shot baseline chooses among
    (default: every model in ``models`` other than the target's own). Labels are in
    :func:`~merginguriel_core.evaluation.label_space_for`'s order over every model used.
    """
    if not sources:
        raise ConfigError(f"no source models for target {target}")
    pool = [loc for loc in (zero_shot_pool if zero_shot_pool is not None else list(models)) if loc != target]
    used = list(dict.fromkeys([loc for loc, _ in sources] + pool))
    label_space = label_space_for(dataset, location, [models[loc] for loc in used])
    examples = dataset.load(location, target, split)
    gold = gold_ids(examples, label_space)
    logits = np.stack([predictor.logits(models[loc], examples, label_space) for loc, _ in sources])
    weights = np.array([w for _, w in sources], dtype=np.float64)
    weights = weights / weights.sum()
    scores = method.combine(logits, weights, {})
    if scores.shape != (len(examples), len(label_space)):
        raise ConfigError(f"voting method {method.name!r} returned shape {scores.shape}, expected "
                          f"{(len(examples), len(label_space))}")
    predictions = scores.argmax(-1)
    metrics = score(predictions, gold, len(label_space), evaluators)
    own = source_accuracies(models, [loc for loc, _ in sources], examples, label_space, predictor)
    best_of_set = max(own.items(), key=lambda item: (item[1], -list(own).index(item[0])))
    overall = source_accuracies(models, pool, examples, label_space, predictor) if pool else {}
    best_overall = max(overall.items(), key=lambda item: (item[1], -pool.index(item[0]))) if overall else None
    return EnsembleResult(target, method.name, sources, metrics, best_of_set, best_overall, predictions, examples,
                          label_space)
