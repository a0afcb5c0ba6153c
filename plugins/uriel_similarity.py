"""Built-in weighting ``uriel``: URIEL similarity, top-k, Sinkhorn, available models, renormalise.

This is the method the MergingUriel research describes; see docs/similarity.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from merginguriel_core import hookimpl
from merginguriel_core.explain import Explanation, final_step
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult
from merginguriel_core.selection import similarity_details, similarity_matrix_for
from merginguriel_core.similarity import uriel_weights

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


class UrielWeighting(Weighting):
    name = "uriel"
    description = (
        "URIEL similarity to the target, top-k per language, Sinkhorn-normalised, then the "
        "--num-languages best available models renormalised to sum to 1."
    )
    reads = frozenset({"top_k", "sinkhorn_iters", "num_languages", "include_target", "features", "similarity_matrix"})

    def compute(self, request: WeightingRequest) -> WeightResult:
        matrix = similarity_matrix_for(request)
        trace = uriel_weights(
            matrix,
            request.target,
            request.available,
            top_k=request.top_k,
            sinkhorn_iters=request.sinkhorn_iters,
            num_languages=request.num_languages,
            include_target=request.include_target,
        )
        details = similarity_details(
            request, sinkhorn_iters=request.sinkhorn_iters,
            raw_similarity={locale: float(trace.raw[trace.locales.index(locale)]) for locale, _ in trace.selected},
        )
        return WeightResult(list(trace.selected), details, explain_uriel(trace, request), list(trace.notes))


def explain_uriel(trace, request: WeightingRequest) -> Explanation:
    """The seed's steps for the target's row: similarity, top-k, Sinkhorn, available, final."""
    shown = [i for i, locale in enumerate(trace.locales) if locale != trace.target or request.include_target]
    locales = [trace.locales[i] for i in shown]
    available = set(request.available)
    steps = [
        ("similarity", trace.raw[shown]),
        ("top-k", trace.after_top_k[shown]),
        ("sinkhorn", trace.after_sinkhorn[shown]),
        ("available", np.array([trace.after_sinkhorn[i] if trace.locales[i] in available else 0.0 for i in shown])),
        ("final", final_step(locales, list(trace.selected))),
    ]
    return Explanation(trace.target, locales, steps, list(trace.selected), list(trace.notes))


@hookimpl
def register_weightings(register):
    register(UrielWeighting())
