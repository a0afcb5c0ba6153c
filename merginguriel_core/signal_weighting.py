"""The shared steps of the weightings that keep the similarity signal (issue: the seed's
Sinkhorn over the whole matrix inflates languages few others resemble, e.g. Georgian for
German). Was part of ``merginguriel_plugins.signal_weightings``.

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

Each weighting is a built-in plugin of its own (``plugins/proportional.py`` ...) over
:class:`SignalWeighting`; the maths of step 4 is in :mod:`merginguriel_core.maths.weights`.
``proportional``, ``softmax`` and ``learned`` (when the fitted slope is >= 0) never give a
more similar language less weight; ``local_sinkhorn`` does not promise that.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merginguriel_core.errors import ConfigError
from merginguriel_core.explain import Explanation, final_step
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult
from merginguriel_core.languages import resolve_language
from merginguriel_core.selection import similarity_details, similarity_matrix_for
from merginguriel_core.similarity import SimilarityMatrix

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


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


class SignalWeighting(Weighting):
    """Similarity → available → candidates → method weights: subclasses give :meth:`method_steps`."""

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
