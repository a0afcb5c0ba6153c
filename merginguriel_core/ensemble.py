"""URIEL-guided ensembles: combine the selected source models' outputs at inference time.

:func:`run_ensemble` evaluates one voting method for one target, next to the two baselines:
the best source of the same set, and the best overall zero-shot source (the best model
other than the target's own). All logits go through the :class:`Predictor` and its cache, so
a comparison over many targets and methods runs each model on each split at most once.

The best-overall baseline costs a forward pass of every model of the pool on the target's
split: a plan can take those accuracies from an N×N matrix written by ``mu nxn`` instead
(``--nxn DIR``), or not compute the baseline at all (``--no-baselines``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import LogitsCache, Predictor, gold_ids, label_space_for, score
from merginguriel_core.interfaces import Dataset, Evaluator, VotingMethod
from merginguriel_core.notes import note

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np

#: :attr:`EnsembleResult.best_zero_shot_from` when each model of the pool was run (or read from the cache).
FROM_LOGITS = "the models' logits"
#: :attr:`EnsembleResult.best_zero_shot_from` when the plan skips the baseline (``--no-baselines``).
NOT_COMPUTED = "not computed (--no-baselines)"


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
    #: Where ``best_zero_shot`` comes from: :data:`FROM_LOGITS`, ``"mu nxn matrix PATH"``, or
    #: :data:`NOT_COMPUTED` (then ``best_zero_shot`` is ``None``).
    best_zero_shot_from: str = FROM_LOGITS

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "voting_method": self.method,
            "sources": [{"locale": l, "weight": w} for l, w in self.sources],
            **self.metrics,
            "best_source": {"locale": self.best_source[0], "accuracy": self.best_source[1]},
            "best_zero_shot": None if self.best_zero_shot is None
            else {"locale": self.best_zero_shot[0], "accuracy": self.best_zero_shot[1]},
            "best_zero_shot_from": self.best_zero_shot_from,
        }


def accuracy(logits: np.ndarray, gold: np.ndarray) -> float:
    """The share of examples whose argmax is the gold label id."""
    return float(np.mean(logits.argmax(-1) == gold))


def source_accuracies(models: Mapping[str, Path], locales: list[str], examples: Examples, label_space: list[str],
                      predictor: Predictor) -> dict[str, float]:
    """Accuracy of each listed model on ``examples`` (logits from the cache when present)."""
    gold = gold_ids(examples, label_space)
    return {loc: accuracy(predictor.logits(models[loc], examples, label_space), gold) for loc in locales}


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
    #: ``False``: no best-overall zero-shot baseline (it costs a forward pass of each model of the pool).
    baselines: bool = True
    #: The pool's accuracies on the target from an N×N matrix (``--nxn``), used instead of running them.
    zero_shot: Mapping[str, float] | None = None
    #: The matrix file ``zero_shot`` was read from.
    zero_shot_from: Path | None = None

    @property
    def zero_shot_candidates(self) -> list[str]:
        """The models the best-overall zero-shot baseline chooses from: the pool (default: every
        model) without the target's own."""
        pool = self.zero_shot_pool if self.zero_shot_pool is not None else list(self.models)
        return [loc for loc in pool if loc != self.target]

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
    pool = plan.zero_shot_candidates if plan.baselines and plan.zero_shot is None else []
    used = list(dict.fromkeys([loc for loc, _ in sources] + pool))
    label_space = label_space_for(plan.dataset, plan.location, [models[loc] for loc in used])
    examples = plan.dataset.load(plan.location, target, plan.split)
    gold = gold_ids(examples, label_space)
    member_logits = [predictor.logits(models[loc], examples, label_space) for loc, _ in sources]
    weights = np.array([w for _, w in sources], dtype=np.float64)
    scores = plan.method.combine(np.stack(member_logits), weights,
                                  {p.name: p.default for p in getattr(plan.method, "params", ())})
    if scores.shape != (len(examples), len(label_space)):
        raise ConfigError(f"voting method {plan.method.name!r} returned shape {scores.shape}, expected "
                          f"{(len(examples), len(label_space))}")
    predictions = scores.argmax(-1)
    metrics = score(predictions, gold, len(label_space), plan.evaluators)
    own = {loc: accuracy(logits, gold) for (loc, _), logits in zip(sources, member_logits)}
    best_overall, origin = _best_zero_shot(plan, own, examples, label_space, predictor)
    return EnsembleResult(target, plan.method.name, sources, metrics, _best(own, list(own)), best_overall, predictions,
                          examples, label_space, origin)


def _best(accuracies: Mapping[str, float], order: list[str]) -> tuple[str, float] | None:
    """The locale with the highest accuracy (the first in ``order`` on a tie), ``None`` for none."""
    if not order:
        return None
    locale = max(order, key=lambda loc: (accuracies[loc], -order.index(loc)))
    return locale, accuracies[locale]


def _best_zero_shot(plan: EnsemblePlan, own: Mapping[str, float], examples: Examples, label_space: list[str],
                    predictor: Predictor) -> tuple[tuple[str, float] | None, str]:
    """The best-overall zero-shot baseline and where it comes from (the plan's N×N matrix,
    the models' logits: the members' already computed, the others' run now), or ``None`` and
    :data:`NOT_COMPUTED` when the plan skips it."""
    if not plan.baselines:
        return None, NOT_COMPUTED
    pool = plan.zero_shot_candidates
    if plan.zero_shot is not None:
        return _best(plan.zero_shot, pool), f"mu nxn matrix {plan.zero_shot_from}"
    others = [loc for loc in pool if loc not in own]
    uncached = [loc for loc in others if not predictor.cached(plan.models[loc], examples, label_space)]
    if uncached:
        note(baseline_cost(len(uncached), len(others) - len(uncached), plan.target))
    accuracies = {**own, **source_accuracies(plan.models, others, examples, label_space, predictor)}
    return _best(accuracies, pool), FROM_LOGITS


def baseline_cost(uncached: int, cached: int, target: str) -> str:
    """The line said before the best-overall baseline runs ``uncached`` models on ``target``."""
    models = f"each of the {uncached} models" if uncached > 1 else "1 model"
    rest = f" ({cached} more cached)" if cached else ""
    return (f"computing the best-overall zero-shot baseline: a forward pass of {models}{rest} on {target} "
            f"(skip with --no-baselines, or reuse an N×N matrix with --nxn DIR)")
