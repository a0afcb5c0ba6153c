"""Weightings that keep the similarity signal (issue: the seed's Sinkhorn over the whole
matrix inflates languages few others resemble, e.g. Georgian for German).

All four share the candidate step, then differ in how similarity becomes weight:

1. similarity: ``(cos + 1) / 2`` of the URIEL vectors (any ``--features``, or
   ``--similarity-matrix``) between the target and every language;
2. available: only languages with a model (``--source-langs`` narrows them);
3. candidates: the ``min(--top-k, --num-languages)`` most similar available languages
   (ties at the cut broken by locale, so the choice is deterministic);
4. weights over exactly those candidates, summing to 1:

- ``proportional``: ``s_j^power / Σ s^power`` (power 0 is the plain average of the
  candidates, 1 normalised similarity; larger powers sharpen);
- ``softmax``: ``exp(s_j / T) / Σ exp(s / T)``;
- ``local_sinkhorn``: Sinkhorn (``--sinkhorn-iters``) on the similarity matrix restricted
  to the target and its candidates (diagonal zeroed), the target's row renormalised;
- ``learned``: from an N×N zero-shot matrix (``mu nxn``'s ``evaluation_matrix.csv``), fit
  ``accuracy ≈ a + b·similarity`` by least squares over every (source, target) pair that
  does not involve the current target (so evaluating on a target never uses its results
  or its own model),
  then ``w_j ∝ max(a + b·s_j, 0)^power``.

``proportional``, ``softmax`` and ``learned`` (when the fitted slope is >= 0) never give a
more similar language less weight; ``local_sinkhorn`` does not promise that.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.explain import Explanation, final_step
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult
from merginguriel_core.languages import resolve_language
from merginguriel_core.params import Param
from merginguriel_core.selection import similarity_details, similarity_matrix_for
from merginguriel_core.similarity import SimilarityMatrix, sinkhorn


# ------------------------------------------------------------------------- pure maths
def proportional_weights(similarity: np.ndarray, power: float) -> np.ndarray:
    """``s^power`` normalised to sum 1 (``power = 0``: equal weights)."""
    raised = np.power(np.asarray(similarity, dtype=np.float64), power)
    total = raised.sum()
    if not total > 0:
        if np.any(np.asarray(similarity) > 0):
            raise ConfigError(f"similarity^{power:g} underflows to 0 for every candidate; choose a smaller power")
        raise ConfigError("every candidate has similarity 0 to the target; proportional weights are undefined")
    return raised / total


def softmax_weights(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """``exp(s / T)`` normalised to sum 1 (computed stably)."""
    scaled = np.asarray(similarity, dtype=np.float64) / temperature
    exps = np.exp(scaled - scaled.max())
    return exps / exps.sum()


def local_sinkhorn_weights(block: np.ndarray, iterations: int, include_target: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sinkhorn on ``block`` (row/column 0 the target, then the other candidates), diagonal
    zeroed unless ``include_target`` (then the target is a candidate too, weighing itself).

    Returns the target's row after Sinkhorn (the candidates' columns: the target's own first
    when ``include_target``) and the same renormalised.
    """
    values = np.array(block, dtype=np.float64)
    if not include_target:
        np.fill_diagonal(values, 0.0)
    row = sinkhorn(values, iterations)[0, 0 if include_target else 1:]
    total = row.sum()
    if not total > 0:
        raise ConfigError("Sinkhorn over the candidates left the target's row all zero")
    return row, row / total


def fit_accuracy(similarity: np.ndarray, accuracy: np.ndarray) -> tuple[float, float]:
    """Least-squares ``accuracy ≈ a + b·similarity``; returns ``(a, b)``."""
    x = np.asarray(similarity, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ConfigError(
            f"the N×N matrix gives {x.size} (source, target) pairs with distinct similarities; "
            "at least 2 are needed to fit accuracy against similarity"
        )
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def read_nxn(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``mu nxn``'s matrix CSV: rows sources, columns targets (canonical locales)."""
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"N×N matrix {path} does not exist (make one with `mu nxn`)")
    try:
        frame = pd.read_csv(path, index_col=0)
    except Exception as error:  # pandas raises many kinds for a bad file
        raise ConfigError(f"cannot read N×N matrix {path}: {error}") from None
    rows = [resolve_language(str(code)).locale for code in frame.index]
    columns = [resolve_language(str(code)).locale for code in frame.columns]
    values = frame.to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ConfigError(f"N×N matrix {path} holds values outside [0, 1]; expected accuracies")
    return rows, columns, values


# ------------------------------------------------------------------------- shared steps
class _SignalWeighting(Weighting):
    """Similarity → available → candidates → method weights."""

    reads = frozenset({"top_k", "num_languages", "include_target", "features", "similarity_matrix"})

    def method_steps(self, request: WeightingRequest, matrix: SimilarityMatrix, target: str,
                     candidates: list[str], similarity: np.ndarray) -> tuple[list[tuple[str, np.ndarray]], np.ndarray, dict[str, Any]]:
        """Method-specific steps over ``candidates`` (values aligned with them) and final weights."""
        raise NotImplementedError

    def compute(self, request: WeightingRequest) -> WeightResult:
        matrix = similarity_matrix_for(request)
        row = matrix.index(request.target)
        target = matrix.locales[row]
        raw = matrix.values[row]
        notes: list[str] = []
        available = set(request.available)
        for locale in sorted(available - set(matrix.locales)):
            notes.append(f"source {locale} is not in the similarity matrix; skipped")
        shown = [j for j, locale in enumerate(matrix.locales) if locale != target or request.include_target]
        pool = [j for j in shown if matrix.locales[j] in available]
        if not pool:
            raise ConfigError(f"no available source language is in the similarity matrix for {target}")
        count = min(request.top_k, request.num_languages)
        chosen = sorted(pool, key=lambda j: (-raw[j], matrix.locales[j]))[:count]
        if len(chosen) < request.num_languages:
            notes.append(f"only {len(chosen)} of the {request.num_languages} requested source languages are "
                         f"available{' (--top-k ' + str(request.top_k) + ')' if request.top_k < request.num_languages else ''}; using those")
        candidates = [matrix.locales[j] for j in chosen]
        similarity = raw[chosen]
        method_steps, weights, details = self.method_steps(request, matrix, target, candidates, similarity)
        if "note" in details:
            notes.append(details.pop("note"))
        selected = sorted(zip(candidates, (float(w) for w in weights)), key=lambda item: (-item[1], item[0]))
        selected = [(locale, weight) for locale, weight in selected if weight > 0]
        if not selected:
            raise ConfigError(f"weighting {self.name!r} gave every candidate weight 0 for {target}")
        total = sum(weight for _, weight in selected)
        selected = [(locale, weight / total) for locale, weight in selected]

        locales = [matrix.locales[j] for j in shown]
        index = {locale: i for i, locale in enumerate(locales)}

        def spread(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
            full = np.full(len(locales), fill)
            for locale, value in zip(candidates, values):
                full[index[locale]] = value
            return full

        steps = [
            ("similarity", raw[shown]),
            ("available", np.array([raw[j] if matrix.locales[j] in available else 0.0 for j in shown])),
            ("candidates", spread(similarity)),
            *[(name, spread(values, math.nan)) for name, values in method_steps],  # "—" off the candidates
            ("final", final_step(locales, selected)),
        ]
        details = similarity_details(
            request, params=dict(request.params),
            raw_similarity={locale: float(s) for locale, s in zip(candidates, similarity)}, **details,
        )
        return WeightResult(selected, details, Explanation(target, locales, steps, selected, notes), notes)


class ProportionalWeighting(_SignalWeighting):
    name = "proportional"
    description = "Similarity^power normalised over the most similar available models (power 0 = their plain average)."
    params = (Param("power", float, 1.0, "exponent on similarity: 0 equal weights, 1 proportional, larger sharper",
                    minimum=0.0),)

    def method_steps(self, request, matrix, target, candidates, similarity):
        return [], proportional_weights(similarity, request.params["power"]), {}


class SoftmaxWeighting(_SignalWeighting):
    name = "softmax"
    description = "Softmax of similarity over a temperature, over the most similar available models."
    params = (Param("temperature", float, 0.05, "softmax temperature: smaller concentrates weight on the most similar",
                    minimum=0.0, min_inclusive=False),)

    def method_steps(self, request, matrix, target, candidates, similarity):
        return [], softmax_weights(similarity, request.params["temperature"]), {}


class LocalSinkhornWeighting(_SignalWeighting):
    name = "local_sinkhorn"
    description = "Sinkhorn on the similarity matrix restricted to the target and its most similar available models."
    reads = _SignalWeighting.reads | {"sinkhorn_iters"}

    def method_steps(self, request, matrix, target, candidates, similarity):
        others = [locale for locale in candidates if locale != target]
        rows = [matrix.index(target)] + [matrix.index(locale) for locale in others]
        block = matrix.values[np.ix_(rows, rows)]
        own = target in candidates  # --include-target made the target a candidate: it keeps its diagonal
        after, weights = local_sinkhorn_weights(block, request.sinkhorn_iters, include_target=own)
        order = ([target] if own else []) + others
        position = {locale: i for i, locale in enumerate(order)}
        index = [position[locale] for locale in candidates]
        return [("sinkhorn", after[index])], weights[index], {"sinkhorn_iters": request.sinkhorn_iters}


class LearnedWeighting(_SignalWeighting):
    name = "learned"
    description = ("Weights from an N×N zero-shot matrix: fit accuracy ≈ a + b·similarity (pairs involving the target "
                   "left out), weight sources by predicted accuracy^power.")
    params = (
        Param("nxn_matrix", str, "", "mu nxn's evaluation_matrix.csv (rows sources, columns targets)"),
        Param("power", float, 1.0, "exponent on predicted accuracy (larger sharpens)", minimum=0.0),
    )

    def method_steps(self, request, matrix, target, candidates, similarity):
        if not request.params["nxn_matrix"]:
            raise ConfigError("weighting 'learned' needs --weighting-param nxn_matrix=PATH (mu nxn's evaluation_matrix.csv)")
        path = Path(request.params["nxn_matrix"])
        sources, targets, accuracy = read_nxn(path)
        pairs_x, pairs_y = [], []
        for i, source in enumerate(sources):
            for j, other in enumerate(targets):
                if source == other or target in (source, other) or not math.isfinite(accuracy[i, j]):
                    continue
                if source in matrix.locales and other in matrix.locales:
                    pairs_x.append(matrix.values[matrix.index(source), matrix.index(other)])
                    pairs_y.append(accuracy[i, j])
        intercept, slope = fit_accuracy(np.array(pairs_x), np.array(pairs_y))
        predicted = intercept + slope * similarity
        raised = np.power(np.clip(predicted, 0.0, None), request.params["power"])
        if not raised.sum() > 0:
            raise ConfigError(f"the fit (accuracy = {intercept:.3f} + {slope:.3f}·similarity) predicts no positive "
                              f"accuracy for any candidate of {target}")
        details: dict[str, Any] = {"fit": {"intercept": intercept, "slope": slope, "pairs": len(pairs_x),
                                           "left_out_target": target, "nxn_matrix": str(path)}}
        if slope < 0:
            details["note"] = (f"the fitted accuracy falls with similarity (slope {slope:.3f}): less similar "
                               "sources get more weight")
        return [("predicted accuracy", predicted)], raised / raised.sum(), details


WEIGHTINGS = (ProportionalWeighting(), SoftmaxWeighting(), LocalSinkhornWeighting(), LearnedWeighting())


@hookimpl
def register_weightings(register):
    for weighting in WEIGHTINGS:
        register(weighting)
